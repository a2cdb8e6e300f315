"""Runtime configuration and the annotation allow-list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.sandbox import allowlist, config
from agent.sandbox.errors import AnnotationError, RuntimeConfigError
from agent.vm.config import Platform

REPO = Path(__file__).parents[3]
TEMPLATE = REPO / "packaging" / "node" / "runtime.toml"


def substituted(platform: str = "qemu-insecure", handler_dir: str = "/opt/contrast/h") -> str:
    """The template as the installer writes it (its @@…@@ placeholders replaced)."""
    text = TEMPLATE.read_text()
    return (
        text.replace("@@PLATFORM@@", platform)
        .replace("@@HANDLER_DIR@@", handler_dir)
        .replace("@@HANDLER@@", "contrast-cc-test-12345678")
    )


def write_manifest(folder: Path, cmdline: list[str]) -> None:
    (folder / "share").mkdir(parents=True)
    (folder / "share" / "manifest.json").write_text(json.dumps({"cmdline": cmdline}))


def test_template_parses_for_every_platform(tmp_path: Path) -> None:
    write_manifest(tmp_path, ["console=ttyS0", "roothash=ab"])
    for name, platform in config.PLATFORMS.items():
        parsed = config.parse(substituted(name, str(tmp_path)), tmp_path / "runtime.toml")
        assert parsed.platform is platform
        assert parsed.guest.kernel == tmp_path / "share" / "vmlinuz"
        assert parsed.guest.cmdline == ("console=ttyS0", "roothash=ab")
        assert parsed.allowed_annotations == frozenset(config.DEFAULT_ALLOWED)


BASE = """
platform = "qemu-insecure"
[guest]
kernel = "/k"
initrd = "/i"
rootfs = "/r"
cmdline = ["console=ttyS0"]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BASE + "colour = 1\n", "unknown key(s) in [guest]: colour"),
        ("colour = 1\n" + BASE, "unknown key(s): colour"),
        (BASE.replace("qemu-insecure", "metal-qemu-sev"), "platform must be one of"),
        (BASE.replace("qemu-insecure", "metal-qemu-snp"), "firmware is required"),
        (BASE.replace('"/k"', '"k"'), "kernel must be an absolute path"),
        (BASE + "[vm]\nvcpus = 0\n", "vcpus must be an integer >= 1"),
        (BASE + "[vm]\nvcpus = 9\n", "exceed max_vcpus"),
        (BASE + "[vm]\nmemory = 1\n", "unknown key(s) in [vm]: memory"),
        (BASE + "[timeouts]\nboot_seconds = true\n", "boot_seconds must be a number"),
        (BASE + 'manifest = "/m.json"\n', "exactly one of cmdline and manifest"),
        (BASE + '[annotations]\nallowed = ["io.katacontainers.config.hypervisor.path"]\n',
         "not supported by this runtime: io.katacontainers.config.hypervisor.path"),
        ("platform = [", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_config_names_the_problem(text: str, message: str) -> None:
    with pytest.raises(RuntimeConfigError) as err:
        config.parse(text, Path("/etc/runtime.toml"))
    assert str(err.value).startswith("/etc/runtime.toml")
    assert message in str(err.value)


def test_load_needs_an_absolute_readable_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeConfigError, match="not absolute"):
        config.load(Path("runtime.toml"))
    with pytest.raises(RuntimeConfigError, match="cannot read runtime config"):
        config.load(tmp_path / "missing.toml")


def parsed(extra: str = "") -> config.RuntimeConfig:
    return config.parse(BASE + extra, Path("/etc/runtime.toml"))


def test_annotations_within_limits_set_the_vm() -> None:
    settings = allowlist.vm_settings(
        {
            config.VCPUS_ANNOTATION: "2",
            config.MEMORY_ANNOTATION: "1024",
            config.INITDATA_ANNOTATION: "H4sI",
            "io.kubernetes.cri.sandbox-id": "abc",  # other prefixes are not ours to judge
        },
        parsed(),
    )
    assert settings == allowlist.PodVmSettings(vcpus=2, memory_mib=1024, initdata="H4sI")
    defaults = allowlist.vm_settings({}, parsed("[vm]\nvcpus = 2\nmemory_mib = 256\n"))
    assert (defaults.vcpus, defaults.memory_mib, defaults.initdata) == (2, 256, None)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "io.katacontainers.config.hypervisor.path",
            "/evil",
            "is not allowed by the runtime config",
        ),
        (config.VCPUS_ANNOTATION, "9", "not an integer in 1..8"),
        (config.VCPUS_ANNOTATION, "1,id=x", "not an integer"),
        (config.MEMORY_ANNOTATION, "-1", "not an integer in 64..16384"),
    ],
)
def test_refused_annotation_names_itself(key: str, value: str, message: str) -> None:
    with pytest.raises(AnnotationError) as err:
        allowlist.vm_settings({key: value}, parsed())
    assert key in str(err.value)
    assert message in str(err.value)


def test_allow_list_can_be_narrowed() -> None:
    narrow = parsed(f'[annotations]\nallowed = ["{config.INITDATA_ANNOTATION}"]\n')
    with pytest.raises(AnnotationError, match="default_vcpus is not allowed"):
        allowlist.vm_settings({config.VCPUS_ANNOTATION: "1"}, narrow)


def test_platform_enum_matches_vm_manager() -> None:
    assert config.PLATFORMS["qemu-insecure"] is Platform.INSECURE
