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


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    assert console.tail(log) == ""
    log.write_bytes(b"a" * 10000 + b"\r\nlast line\r\n")
    assert console.tail(log, 12) == "\nlast line\n"


def test_watch_reads_on_from_where_it_was(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    watch = console.Watch(log, "agent ready")
    assert not watch.found()  # no log yet
    log.write_bytes(b"[    1.0] kernel\r\nagent re")
    assert not watch.found()
    with log.open("ab") as f:
        f.write(b"ady\r\n")  # the needle split across two reads
    assert watch.found()


def test_watch_reads_each_byte_once(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"x" * 5000)
    watch = console.Watch(log, "agent ready")
    assert not watch.found()
    with log.open("r+b") as f:
        f.write(b"agent ready")  # in bytes read already: a watch reading them again finds it
    assert not watch.found()
    with log.open("ab") as f:
        f.write(b"\nagent ready\n")
    assert watch.found()


def test_watch_starts_again_on_a_log_written_anew(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_bytes(b"y" * 200)
    watch = console.Watch(log, "ready")
    assert not watch.found()
    log.write_bytes(b"ready\n")  # shorter than what was read
    assert watch.found()
