#!/bin/sh
# PID 1 of the pod-VM's verified root. Boot order: runtime mounts, then one Python
# process: the guest agent listens (Health answers), the initdata processor (when
# present) publishes the policy, the agent loads it and serves AgentService requests
# (which wait for it). When the agent exits, the VM powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONPATH=/usr/lib/contrast/python
export PYTHONDONTWRITEBYTECODE=1
export HOME=/root

# Page the big shared libraries in on the other vCPU while Python starts: each page
# read goes through erofs decompression and dm-verity hashing, slow under TCG, and a
# dlopen faulting them in holds Python's GIL meanwhile. First what the agent needs
# before it answers (protobuf's upb, the libssl asyncio loads), then regopy's.
py=/usr/lib/contrast/python
busybox cat "$py"/google/_upb/*.so /usr/lib/x86_64-linux-gnu/libcrypto.so.3 \
    /usr/lib/x86_64-linux-gnu/libssl.so.3 "$py"/regopy.libs/* "$py"/regopy/*.so \
    >/dev/null 2>&1 &

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

# initdata processor, then the guest agent (guest/init/__main__.py). -S: no site
# module; every guest package is on PYTHONPATH, and site would only add
# dist-packages, Debian's sitecustomize and its failing apport import (a scan of
# every path entry). Not -I/-E: those would drop PYTHONPATH.
python3 -S -m guest.init
rc=$?
echo "contrast-init: guest services exited with status $rc; powering off" >/dev/console
sync
exec busybox poweroff -f
