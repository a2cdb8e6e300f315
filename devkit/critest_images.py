"""The images the CRI validation suite (critest) names, built here, nothing downloaded.

critest hard-codes its images (``registry.k8s.io/e2e-test-images/...``,
``gcr.io/k8s-staging-cri-tools/...``); :func:`suite_images` builds one of ours for each
name, from Debian's busybox-static plus what the suite's checks call that busybox lacks:

- ``pgrep`` and ``ipcs`` (``ipcs -m`` lists ``/proc/sysvipc/shm``): shell scripts;
- the web server (``nginx``): a script named ``nginx`` (``pidof nginx`` finds it) that
  writes ``/var/run/nginx.pid``, carries ``nginx: master process`` in its command line
  (the PID-namespace specs grep ``/proc/1/cmdline`` for it) and serves the nginx welcome
  page with busybox ``httpd``;
- ``nonewprivs``: a setuid-root static program printing ``Effective uid: N``;
- the sandbox (pause) image's process is named ``pause`` (a static program that waits
  for a signal): "execSync with timeout" checks that no ``sleep`` is left in the pod's
  shared PID namespace, so the pause process must not be busybox's ``sleep``.

The static programs are compiled with ``gcc -static`` (Debian's gcc and libc6-dev).
Images the suite names only by a digest of upstream bytes
(``test-image-digest@sha256:9700...``) cannot be rebuilt: that spec is skipped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from devkit import ocibuild as ob
from devkit.command import run
from devkit.errors import DevkitError

K8S = "registry.k8s.io"
GCR = "gcr.io"
OLD_K8S = "k8s.gcr.io"
MIRRORED = (K8S, GCR, OLD_K8S)
STAGING = f"{GCR}/k8s-staging-cri-tools"
E2E = f"{K8S}/e2e-test-images"
WEB_PORT = 80
HOSTNET_WEB_PORT = 12003  # the suite's hostnet-nginx image listens there

USERS = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
GROUPS = """root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
www-data:x:33:
users:x:100:
nogroup:x:65534:
"""

PGREP = """#!/bin/sh
# pgrep NAME: the pids of processes named NAME, one a line (busybox has pidof only).
found=1
for pid in $(pidof "$1"); do echo "$pid"; found=0; done
exit $found
"""

IPCS = """#!/bin/sh
# ipcs [-m]: the SysV shared memory segments (key, shmid, owner, perms, bytes).
echo "------ Shared Memory Segments --------"
echo "key        shmid      owner      perms      bytes"
tail -n +2 /proc/sysvipc/shm | while read -r key shmid perms size rest; do
  echo "$key $shmid root $perms $size"
done
"""

# Run as `nginx` by the image's Cmd; re-executes itself once so that its command line
# carries "nginx: master process" as one argument (a NUL-separated cmdline).
NGINX = """#!/bin/sh
# critest's web server stand-in: busybox httpd serving the nginx welcome page.
if [ "$1" != "nginx: master process" ]; then exec /usr/sbin/nginx "nginx: master process"; fi
echo $$ > /var/run/nginx.pid
httpd -f -p "${NGINX_PORT:-80}" -h /usr/share/nginx/html &
trap 'kill $! 2>/dev/null; exit 0' TERM INT QUIT
wait
"""

HTTPD = """#!/bin/sh
# critest's httpd stand-in: Apache's start-up line, then busybox httpd in the foreground.
echo "[core:notice] [pid $$] AH00094: Command line: 'httpd -D FOREGROUND'" >&2
exec httpd -f -p 80 -h /usr/local/apache2/htdocs
"""

WELCOME = b"""<!DOCTYPE html>
<html><head><title>Welcome to nginx!</title></head>
<body><h1>Welcome to nginx!</h1>
<p>critest's web server image, built by the Contrast devkit (busybox httpd).</p>
</body></html>
"""

PAUSE_C = r"""
#include <signal.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGTERM, done);
    signal(SIGINT, done);
    for (;;) pause();
}
"""

NNP_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("Effective uid: %d\n", (int)geteuid()); return 0; }
"""


@functools.cache
def compile_static(source: str, name: str) -> bytes:
    """A static x86-64 program from C ``source``; raises DevkitError without gcc."""
    if shutil.which("gcc") is None:
        raise DevkitError(f"gcc not found: critest's {name} program is compiled here")
    with tempfile.TemporaryDirectory(prefix="critest-cc-") as folder:
        src, out = Path(folder) / f"{name}.c", Path(folder) / name
        src.write_text(source)
        run(["gcc", "-static", "-Os", "-s", "-o", str(out), str(src)], timeout=120)
        return out.read_bytes()


def _applets() -> list[str]:
    found = shutil.which("busybox") or "/bin/busybox"
    if not Path(found).is_file():
        raise DevkitError("busybox not found (Debian package busybox-static)")
    listed = subprocess.run(
        [found, "--list"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=30, check=True,
    ).stdout.split()  # fmt: skip
    return sorted(set(listed) - {"busybox", "pgrep", "ipcs"})


@functools.cache
def base_entries() -> tuple[ob.Entry, ...]:
    """busybox with a link per applet, pgrep and ipcs, users and the usual dirs."""
    busybox = Path(shutil.which("busybox") or "/bin/busybox")
    entries = [ob.directory("bin"), ob.file("bin/busybox", busybox.read_bytes(), 0o755)]
    # Hard links, as in the upstream busybox image: a masked path (MaskedPaths spec,
    # /dev/null bound over /bin/ls) must not resolve to the busybox binary itself.
    # Their mode is busybox's: containerd's unpack applies a link's mode to the inode.
    entries += [
        ob.Entry(f"bin/{name}", "hardlink", mode=0o755, link="bin/busybox") for name in _applets()
    ]
    entries += [ob.file("bin/pgrep", PGREP.encode(), 0o755)]
    entries += [ob.file("bin/ipcs", IPCS.encode(), 0o755)]
    entries += [ob.directory(d) for d in ("etc", "proc", "sys", "dev", "root", "home")]
    entries += [ob.directory("tmp", 0o1777), ob.directory("var"), ob.directory("var/run")]
    entries += [ob.file("etc/passwd", USERS.encode()), ob.file("etc/group", GROUPS.encode())]
    return tuple(entries)


def image(
    extra: list[ob.Entry] | None = None,
    *,
    cmd: list[str] | None = None,
    entrypoint: list[str] | None = None,
    user: str = "",
) -> ob.Image:
    """The base image plus ``extra`` entries (a second layer), with its config."""
    layers = [ob.Layer(ob.layer_tar(list(base_entries())))]
    if extra:
        layers.append(ob.Layer(ob.layer_tar(extra)))
    built = ob.build_image(layers)
    config = json.loads(built.config)
    config["config"] = {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Cmd": cmd if cmd is not None else ["/bin/sh"],
    }
    if entrypoint:
        config["config"]["Entrypoint"] = entrypoint
    if user:
        config["config"]["User"] = user
    return _with_config(built, json.dumps(config).encode())


def _with_config(built: ob.Image, config: bytes) -> ob.Image:
    manifest = json.loads(built.manifest)
    manifest["config"] = {**manifest["config"], "digest": ob.sha256(config), "size": len(config)}
    manifest_blob = json.dumps(manifest).encode()
    blobs = {d: b for d, b in built.blobs.items() if b not in (built.config, built.manifest)}
    blobs[ob.sha256(config)] = config
    blobs[ob.sha256(manifest_blob)] = manifest_blob
    return ob.Image(blobs, manifest_blob, config, built.layers)


def web_server(port: int) -> ob.Image:
    extra = [
        ob.directory("usr"), ob.directory("usr/sbin"), ob.directory("usr/share"),
        ob.directory("usr/share/nginx"), ob.directory("usr/share/nginx/html"),
        ob.file("usr/sbin/nginx", NGINX.replace("${NGINX_PORT:-80}", str(port)).encode(), 0o755),
        ob.file("usr/share/nginx/html/index.html", WELCOME),
    ]  # fmt: skip
    return image(extra, cmd=["nginx"])


def httpd() -> ob.Image:
    """Apache's image as the multi-container specs see it: its log names the command
    line (``httpd -D FOREGROUND``), ``/`` answers 200 on port 80 (busybox httpd)."""
    names = ("usr", "usr/local", "usr/local/bin", "usr/local/apache2", "usr/local/apache2/htdocs")
    page = b"<html><body><h1>It works!</h1></body></html>\n"
    extra = [
        *(ob.directory(d) for d in names),
        ob.file("usr/local/bin/httpd-foreground", HTTPD.encode(), 0o755),
        ob.file("usr/local/apache2/htdocs/index.html", page),
    ]
    return image(extra, cmd=["httpd-foreground"])


def pause(version: str = "") -> ob.Image:
    """The sandbox image: ``/pause``, a process named pause; a ``version`` makes an image
    of its own (the suite's pause:3.9 must not be the node's sandbox image: a spec
    counts the tags of the image it pulled)."""
    extra = [ob.file("pause", compile_static(PAUSE_C, "pause"), 0o755)]
    if version:
        extra.append(ob.file("pause-version", version.encode()))
    return image(extra, cmd=["/pause"])


def nonewprivs() -> ob.Image:
    """A setuid-root program printing its effective uid (the NoNewPrivs specs)."""
    nnp = compile_static(NNP_C, "nnp")
    folders = [ob.directory(d) for d in ("usr", "usr/local", "usr/local/bin")]
    extra = [*folders, ob.file("usr/local/bin/nnp", nnp, 0o4755)]
    return image(extra, entrypoint=["/usr/local/bin/nnp"], cmd=[])


def predefined_group() -> ob.Image:
    """User 1000 (``default-user``), member of group 50000 in the image's /etc/group."""
    passwd = USERS + "default-user:x:1000:1000::/home:/bin/sh\n"
    group = GROUPS + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
    extra = [ob.file("etc/passwd", passwd.encode()), ob.file("etc/group", group.encode())]
    return image(extra, user="1000")


def marked(name: str) -> ob.Image:
    """The base image with a file that makes its digest its own."""
    return image([ob.file(f"image-{name}", name.encode())])


def suite_images() -> dict[str, ob.Image]:
    """Every image reference critest v1.27/v1.36 names (but the digest-pinned ones),
    by ``registry/repository:tag``."""
    base = image()
    images = {
        f"{E2E}/busybox:1.29-2": base,
        f"{E2E}/busybox:1.29-4": base,
        f"{E2E}/nginx:1.14-2": web_server(WEB_PORT),
        f"{E2E}/nginx:1.15-4": web_server(WEB_PORT),
        f"{E2E}/httpd:2.4.39-4": httpd(),
        f"{E2E}/nonewprivs:1.3": nonewprivs(),
        f"{STAGING}/hostnet-nginx-amd64:latest": web_server(HOSTNET_WEB_PORT),
        f"{STAGING}/test-image-latest:latest": marked("latest"),
        f"{STAGING}/test-image-tag:test": marked("tag"),
        f"{STAGING}/test-image-tag:all": marked("all"),
        f"{STAGING}/test-image-user-uid:latest": image(user="1002"),
        f"{STAGING}/test-image-user-username:latest": image(user="www-data"),
        f"{STAGING}/test-image-user-uid-group:latest": image(user="1003:users"),
        f"{STAGING}/test-image-user-username-group:latest": image(user="www-data:users"),
        f"{STAGING}/test-image-predefined-group:latest": predefined_group(),
    }
    # critest v1.36's image identifier specs: one image under three registries' names.
    for name in (f"{K8S}/pause:3.9", f"{GCR}/pause:3.9", f"{OLD_K8S}/pause:3.9"):
        images[name] = pause("3.9")
    for n in (1, 2, 3):
        images[f"{STAGING}/test-image-{n}:latest"] = marked(str(n))
        images[f"{STAGING}/test-image-tags:{n}"] = marked("tags")
    return images


def split(reference: str) -> tuple[str, str, str]:
    """``registry/repository:tag`` -> (registry, repository, tag)."""
    registry, _, rest = reference.partition("/")
    repository, _, tag = rest.rpartition(":")
    return registry, repository, tag


def fingerprint(images: dict[str, ob.Image]) -> str:
    """One digest over every reference and manifest (to tell builds apart in logs)."""
    text = "".join(f"{ref}={img.manifest_digest}\n" for ref, img in sorted(images.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
