#!/bin/busybox sh
# PID 1 of the pod-VM's verified root. Boot order: runtime mounts, then one Python
# process: the guest agent listens (Health answers), the initdata processor (when
# present) publishes the policy, the agent loads it and serves AgentService requests
# (which wait for it). When the agent exits, the VM powers off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONPATH=/usr/lib/contrast/python
export PYTHONDONTWRITEBYTECODE=1
export HOME=/root

# `contrast-init prefetch` (started by the initrd, chrooted into this root, just
# before switch_root): read what the boot needs next, in the order it needs it, on
# the other vCPU. Each page read goes through erofs decompression and dm-verity
# hashing, slow under TCG; Python faulting them in one by one (holding its GIL in a
# dlopen) would wait for each. Missing files are skipped. Not regopy's shared
# libraries (21 MB): cat reads all of them, the policy's load only the pages it
# touches (A/B, 2 vCPUs: first reply 0.47 s sooner without them); nor libssl (the
# agent's asyncio imports no ssl, guest/init/__main__.py).
if [ "$1" = prefetch ]; then
    py=/usr/lib/contrast/python
    std=/usr/lib/python3.*
    lib=/usr/lib/x86_64-linux-gnu
    # shellcheck disable=SC2086  # the globs are meant to expand
    exec busybox cat /usr/bin/python3 $lib/libm.so.6 $lib/libz.so.1 $lib/libexpat.so.1 \
        $std/encodings/__pycache__/__init__.*.pyc $std/encodings/__pycache__/aliases.*.pyc \
        $std/encodings/__pycache__/utf_8.*.pyc $std/__pycache__/*.pyc \
        $std/importlib/__pycache__/*.pyc $std/collections/__pycache__/*.pyc \
        $std/re/__pycache__/*.pyc $std/asyncio/__pycache__/*.pyc \
        $std/concurrent/futures/__pycache__/*.pyc $std/logging/__pycache__/*.pyc \
        $std/lib-dynload/_asyncio.*.so \
        $lib/libcrypto.so.3 $py/guest/__pycache__/*.pyc $py/guest/init/__pycache__/*.pyc \
        $py/guest/agent/__pycache__/*.pyc $py/ttrpc/__pycache__/*.pyc \
        $py/google/protobuf/__pycache__/*.pyc $py/google/protobuf/internal/__pycache__/*.pyc \
        $py/google/_upb/*.so $py/api/kata/__pycache__/*.pyc \
        $py/guest/initdata/__pycache__/*.pyc $std/json/__pycache__/*.pyc \
        $std/lib-dynload/_json.*.so $std/lib-dynload/_ctypes.*.so $lib/libffi.so.8 \
        $py/regopy/__pycache__/*.pyc >/dev/null 2>&1
fi

# busybox's shell, not dash: busybox is static (under TCG every dynamically linked
# exec costs noticeable time, and every exec some), and its shell runs its own
# applets (mkdir, mount) in a fork, without an exec. A command named by its path
# (modprobe, kmod's) is executed as usual. The mounts are in /usr/lib/contrast/fstab
# (guest/init/contrast-fstab).
mkdir -p /dev/pts /dev/shm
mount -a -T /usr/lib/contrast/fstab
echo contrast-pod-vm >/proc/sys/kernel/hostname

# In the background: the agent waits for its port, the power button and (in
# UpdateInterface) the pod's NIC to appear. The agent loads no modules itself.
{ /usr/sbin/modprobe -a virtio_console virtio_net button evdev ||
    echo "contrast-init: some kernel modules failed to load" >/dev/console; } &

# The guest agent and initdata processor (guest/init/__main__.py). -S: no site
# module; every guest package is on PYTHONPATH, and site would only add
# dist-packages, Debian's sitecustomize and its failing apport import (a scan of
# every path entry). Not -I/-E: those would drop PYTHONPATH. -c, not -m: -m imports
# runpy and importlib.util first; -P keeps -c's current directory off sys.path. No
# hash checks of .pyc against their sources: both come from the image build, under
# dm-verity, and the check would read and hash every imported module's source too.
# The cyclic garbage collector is off until the AgentService is built (its collections
# cost a tenth of the imports; guest/agent/__main__.py collect_from_now turns it on).
python3 -S -P --check-hash-based-pycs never \
    -c 'import gc, sys; gc.disable(); from guest.init.__main__ import main; sys.exit(main())'
rc=$?
echo "contrast-init: guest services exited with status $rc; powering off" >/dev/console
sync
exec busybox poweroff -f
