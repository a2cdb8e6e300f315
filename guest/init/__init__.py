"""Boot order inside the pod-VM.

``initrd-init.sh`` is the initrd's /init: it loads the modules for the root disk, opens
the dm-verity device with the parameters from the (measured) kernel command line,
mounts the erofs root read-only and switches into it. ``contrast-init.sh`` is then
PID 1 of the real root: it mounts the runtime filesystems, runs the guest services
(``__main__``: the agent listens, the initdata processor publishes the policy, the
agent loads it) and powers off when the agent exits. Shell scripts, not systemd:
under TCG every second of boot counts.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
INITRD_INIT = HERE / "initrd-init.sh"
ROOT_INIT = HERE / "contrast-init.sh"
ROOT_FSTAB = HERE / "contrast-fstab"  # installed as /usr/lib/contrast/fstab

# What the guest prints on the console; the VM manager on the host waits for these.
READY_LINE = "contrast-guest-agent: ready"
VERITY_FAILED_LINE = "contrast-initrd: dm-verity"
