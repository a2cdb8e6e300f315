#!/bin/sh
# PID 1 of the pod-VM's verified root. Boot order: runtime mounts, initdata
# processor (when present), guest agent. When the agent exits, the VM powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONPATH=/usr/lib/contrast/python
export PYTHONDONTWRITEBYTECODE=1
export HOME=/root

mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup
hostname contrast-pod-vm

modprobe -a virtio_console button evdev ||
    echo "contrast-init: some kernel modules failed to load" >/dev/console

if [ -f /usr/lib/contrast/python/guest/initdata/__main__.py ]; then
    python3 -m guest.initdata process ||
        echo "contrast-init: initdata processor exited with $?" >/dev/console
fi

python3 -m guest.agent
rc=$?
echo "contrast-init: guest agent exited with status $rc; powering off" >/dev/console
sync
exec busybox poweroff -f
