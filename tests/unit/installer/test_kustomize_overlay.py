"""packaging/README.md's kustomize overlay, rendered by kubectl's kustomize against the base."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).parents[3]
README = REPO / "packaging/README.md"


def overlay_example() -> str:
    """The README's yaml block that starts with ``# overlay/kustomization.yaml``."""
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), re.S)
    [block] = [b for b in blocks if b.lstrip().startswith("# overlay/kustomization.yaml")]
    lines = block.splitlines()
    indent = len(lines[0]) - len(lines[0].lstrip())
    return "\n".join(line[indent:] for line in lines) + "\n"


@pytest.mark.allow_programs("kubectl")
def test_the_readmes_overlay_renders_with_the_image_and_handler_it_sets(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        # Not require_programs: kubectl is in no Debian 12 package, so CI cannot install it
        # (scripts/dev.sh only installs Debian's packages and PyPI's); it runs where present.
        pytest.skip("kubectl not installed (not packaged in Debian 12)")
    shutil.copytree(REPO / "packaging", tmp_path / "packaging")
    text = overlay_example()
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay/kustomization.yaml").write_text(text)
    overlay = yaml.safe_load(text)
    [image] = overlay["images"]
    [patch] = overlay["patches"]
    [op] = yaml.safe_load(patch["patch"])
    done = subprocess.run(
        ["kubectl", "kustomize", str(tmp_path / "overlay")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rendered: list[dict[str, Any]] = [d for d in yaml.safe_load_all(done.stdout) if d]
    kinds = {o["kind"]: o for o in rendered}
    assert sorted(kinds) == ["DaemonSet", "Namespace", "RuntimeClass"]
    assert kinds["RuntimeClass"]["handler"] == op["value"]
    pod = kinds["DaemonSet"]["spec"]["template"]["spec"]
    wanted = f"{image['newName']}:{image['newTag']}"
    assert [c["image"] for c in pod["initContainers"] + pod["containers"]] == [wanted, wanted]
    for obj in rendered:
        kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
    # Every object went through the overlay into the namespace the base names.
    assert kinds["DaemonSet"]["metadata"]["namespace"] == kinds["Namespace"]["metadata"]["name"]
