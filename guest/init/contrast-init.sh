#!/bin/sh
# PID 1 of the pod-VM's verified root. Boot order: runtime mounts, initdata
# processor (when present), guest agent. When the agent exits, the VM powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONPATH=/usr/lib/contrast/python
export PYTHONDONTWRITEBYTECODE=1
export HOME=/root

# busybox is static: under TCG every dynamically linked exec costs noticeable time.
busybox mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
busybox mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
busybox mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
busybox mkdir -p /dev/pts /dev/shm
busybox mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
busybox mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
busybox mount -t cgroup2 cgroup2 /sys/fs/cgroup
busybox hostname contrast-pod-vm

# In the background: the agent waits for its port and the power button to appear.
{ modprobe -a virtio_console button evdev ||
    echo "contrast-init: some kernel modules failed to load" >/dev/console; } &

# initdata processor, then the guest agent (guest/init/__main__.py).
python3 -m guest.init
rc=$?
echo "contrast-init: guest services exited with status $rc; powering off" >/dev/console
sync
exec busybox poweroff -f
