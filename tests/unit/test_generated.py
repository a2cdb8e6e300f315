"""The committed generated protobuf modules match the .proto files."""

import pytest

from api import generate


def test_there_are_protos() -> None:
    assert any(str(p).startswith("ttrpc/") for p in generate.proto_files())


def test_generated_code_is_fresh() -> None:
    stale = generate.stale_files()
    assert stale == [], "run `python -m api.generate`: " + "; ".join(stale)


def test_staleness_is_detected(tmp_path: pytest.TempPathFactory) -> None:
    # A copy of the tree with one proto edited must be reported stale: the check can fail.
    import shutil
    from pathlib import Path

    root = Path(str(tmp_path))
    for folder in generate.PROTO_DIRS:
        shutil.copytree(generate.ROOT / folder, root / folder)
    proto = root / "ttrpc/proto/ttrpc.proto"
    proto.write_text(proto.read_text() + "\nmessage Extra { int32 x = 1; }\n")
    assert "ttrpc/proto/ttrpc_pb2.py: differs" in generate.stale_files(root)
