"""Reading the console log for readiness and failure reasons."""

from pathlib import Path

from agent.vm import console
from agent.vm.manager import READY_LINE
from guest.init import READY_LINE as GUEST_READY_LINE

VERITY_PANIC = (
    "[    3.1] device-mapper: verity: 252:0: data block 0 is corrupted\n"
    "[    3.1] Kernel panic - not syncing: dm-verity device corrupted\n"
)


def test_host_waits_for_the_line_the_guest_prints() -> None:
    assert READY_LINE == GUEST_READY_LINE


def test_verity_failure_is_recognised() -> None:
    assert console.verity_failed(VERITY_PANIC)
    assert console.verity_failed("contrast-initrd: dm-verity: cannot open the root device\n")
    assert not console.verity_failed("Kernel panic - not syncing: VFS: Unable to mount root\n")


def test_diagnostic_lines_pick_the_reasons() -> None:
    text = "SeaBIOS\nBooting\n" + VERITY_PANIC + "contrast-initrd: powering off\n"
    assert console.diagnostic_lines(text) == [
        "[    3.1] device-mapper: verity: 252:0: data block 0 is corrupted",
        "[    3.1] Kernel panic - not syncing: dm-verity device corrupted",
        "contrast-initrd: powering off",
    ]


def test_tail_and_contains(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    assert console.tail(log) == ""
    assert not console.contains(log, "x")
    log.write_bytes(b"a" * 10000 + b"\r\nlast line\r\n")
    assert console.tail(log, 12) == "\nlast line\n"
    assert console.contains(log, "last line")
