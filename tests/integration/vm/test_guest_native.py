"""bench.guest_native: the pod-VM image's Python part, run natively from the image's
own root (what bench.vm_boot_bench prints next to the guest's figure under TCG)."""

from __future__ import annotations

import pytest

from bench import guest_native
from guest.image.manifest import GuestImage
from guest.initdata.binding import insecure_cmdline
from guest.initdata.disk import encode
from guest.initdata.document import POLICY_NAME, create

ALLOW_ALL = "package agent_policy\n\ndefault AllowRequestsFailingPolicy := true\n"


def test_the_images_python_part_runs_natively(guest_image: GuestImage) -> None:
    document = create({POLICY_NAME: ALLOW_ALL})
    cmdline = " ".join(insecure_cmdline(document.digest))
    runs = guest_native.measure(guest_image, encode(document.raw), cmdline, 2)
    assert len(runs) == 2
    for run in runs:
        assert run.listening > 0 and run.built > 0


def test_a_native_run_checks_the_initdata_as_the_guest_does(guest_image: GuestImage) -> None:
    # The digest on the (simulated) command line is another document's: the processor
    # refuses, and the native run says so instead of printing a figure.
    document = create({POLICY_NAME: ALLOW_ALL})
    other = create({POLICY_NAME: ALLOW_ALL + "\n# another document\n"})
    cmdline = " ".join(insecure_cmdline(other.digest))
    with pytest.raises(guest_native.Unavailable, match="initdata processor exited with 1"):
        guest_native.measure(guest_image, encode(document.raw), cmdline, 1)
