"""Step 2: the runtime installed by the installer's own code into a temporary host root.

The host root's ``/etc/containerd/config.toml`` is the chosen containerd's own
``containerd config default`` (config version 2 for 1.6, 3 for 2.0, 4 for 2.3), as a
node with that containerd has it; the installer patches it. The assets are this
checkout's shim entry, the guest image and a runtime config whose paths point into the
temporary root (the installer fills in ``@@HANDLER_DIR@@``; the demo prefixes it with
the root, as a node image would ship files at ``/``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import tomlkit

from agent.demo.errors import DemoError
from guest.image.manifest import GuestImage
from installer import cli, containerd_config

PLATFORM = "qemu-insecure"

_RUNTIME_TOML = """\
# Runtime configuration of @@HANDLER@@, written by the contrast demo.
platform = "@@PLATFORM@@"

[guest]
kernel = "{root}@@HANDLER_DIR@@/share/vmlinuz"
initrd = "{root}@@HANDLER_DIR@@/share/initrd.img"
rootfs = "{root}@@HANDLER_DIR@@/share/rootfs.img"
manifest = "{root}@@HANDLER_DIR@@/share/manifest.json"

[timeouts]
boot_seconds = 300
"""

_ASSETS = (
    # (path below the handler dir, file name in the assets dir, mode, role, substitute)
    ("bin/containerd-shim-contrast-cc-v2", "shim", "0755", "shim", False),
    ("etc/runtime.toml", "runtime.toml", "0644", "runtime-config", True),
    ("share/vmlinuz", "vmlinuz", "0644", "kernel", False),
    ("share/initrd.img", "initrd.img", "0644", "initrd", False),
    ("share/rootfs.img", "rootfs.img", "0644", "rootfs", False),
    ("share/manifest.json", "manifest.json", "0644", "other", False),
)


@dataclass(frozen=True)
class Installed:
    handler: str
    host_root: Path
    handler_dir: Path  # inside host_root
    containerd_config: Path
    log: str  # what the installer printed

    @property
    def shim_dir(self) -> Path:
        return self.handler_dir / "bin"

    @property
    def runtime_config(self) -> Path:
        return self.handler_dir / "etc/runtime.toml"

    def config_version(self) -> int:
        """The ``version`` of the config the installer patched."""
        text = self.containerd_config.read_text()
        return containerd_config.read_version(tomlkit.parse(text), str(self.containerd_config))

    def containerd_config_text(self) -> str:
        """The installer's containerd config with our handler's paths (shim, runtime
        config) inside ``host_root``, which stands for the node's ``/`` here."""
        doc = tomlkit.parse(self.containerd_config.read_text())
        try:
            node = doc
            for key in containerd_config.runtimes_path(self.config_version()):
                node = node[key]
            entry = node[self.handler]
            options = entry["options"]
            for table, key in ((entry, "runtime_path"), (options, "ConfigPath")):
                table[key] = str(self.host_root) + str(table[key])
        except KeyError as err:
            raise DemoError(
                f"the installer's containerd config lacks {err} of our handler"
            ) from err
        return doc.as_string()


def write_manifest(directory: Path, image: GuestImage, shim: Path, host_root: Path) -> Path:
    """The installer manifest and its assets (links to the real files) in ``directory``."""
    assets = directory / "assets"
    assets.mkdir(parents=True)
    sources = {
        "shim": shim,
        "vmlinuz": image.kernel,
        "initrd.img": image.initrd,
        "rootfs.img": image.root,
        "manifest.json": image.directory / "manifest.json",
    }
    for name, source in sources.items():
        (assets / name).symlink_to(source.resolve())
    (assets / "runtime.toml").write_text(_RUNTIME_TOML.format(root=host_root))
    lines = ["format = 1", f'platform = "{PLATFORM}"', ""]
    for path, name, mode, role, substitute in _ASSETS:
        lines += ["[[asset]]", f'path = "{path}"', f'source = "assets/{name}"']
        lines += [f'mode = "{mode}"', f'role = "{role}"']
        lines += ["substitute = true", ""] if substitute else [""]
    manifest = directory / "manifest.toml"
    manifest.write_text("\n".join(lines))
    return manifest


def _installer(*args: str) -> str:
    out = io.StringIO()
    if cli.main(list(args), out=out) != 0:
        raise DemoError(f"contrast-node-installer {' '.join(args)} failed (its error is above)")
    return out.getvalue()


def install(directory: Path, image: GuestImage, shim: Path, defaults: str) -> Installed:
    """Install into ``directory/host``, a fresh host root whose containerd config is
    ``defaults`` (the chosen containerd's ``containerd config default``)."""
    host = directory / "host"
    (host / "etc/containerd").mkdir(parents=True)
    (host / "etc/containerd/config.toml").write_text(defaults)
    manifest = write_manifest(directory / "bundle", image, shim, host)
    handler = _installer("handler", "--manifest", str(manifest)).strip()
    log = _installer(
        "install", "--manifest", str(manifest), "--host-root", str(host), "--no-restart"
    )
    return Installed(
        handler=handler,
        host_root=host,
        handler_dir=host / "opt/contrast" / handler,
        containerd_config=host / "etc/containerd/config.toml",
        log=log,
    )
