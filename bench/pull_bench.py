"""Image pull benchmark: our pull + verify + unpack against skopeo copy + umoci unpack.

    sudo .venv/bin/python -m bench.pull_bench [--size-mb 100] [--layers 6] [--rounds 3]

Builds an image of about ``--size-mb`` MB (uncompressed) in ``--layers`` gzip layers,
half incompressible data, half small text files, pushes it into a docker-registry on
loopback, then times, in the same run and alternating:

- ours: ``ImagePuller.pull_into_bundle`` into an empty store (fetch, verify, unpack
  every layer in parallel, publish, overlay-mount the rootfs);
- baseline: ``skopeo copy docker://… oci:…`` followed by ``umoci unpack``.

Prints the median of each, the ratio ours/baseline, then the time of a second pull of
the same image (served from the store) with and without the mount. No assertions.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from devkit import ocibuild as ob
from devkit.command import run
from devkit.registry import Registry, registry_settings_toml
from guest.imagepull import config
from guest.imagepull.puller import ImagePuller
from guest.imagepull.store import LayerStore


def build_layers(size_mb: int, count: int, seed: int = 7) -> list[ob.Layer]:
    rng = random.Random(seed)
    per_layer = size_mb * (1 << 20) // count
    words = [f"word{i:05d}".encode() for i in range(4096)]
    layers = []
    for n in range(count):
        entries = [ob.directory(f"layer{n}"), ob.directory(f"layer{n}/bin")]
        entries.append(ob.directory(f"layer{n}/share"))
        # Half: a few large incompressible files (binaries, libraries).
        remaining = per_layer // 2
        i = 0
        while remaining > 0:
            size = min(remaining, rng.randint(256 << 10, 4 << 20))
            entries.append(ob.file(f"layer{n}/bin/blob{i}", rng.randbytes(size), 0o755))
            remaining -= size
            i += 1
        # Half: many small compressible files (configs, scripts, docs).
        remaining = per_layer - per_layer // 2
        i = 0
        while remaining > 0:
            size = min(remaining, rng.randint(512, 16 << 10))
            text = b" ".join(rng.choices(words, k=size // 10 + 1))[:size]
            entries.append(ob.file(f"layer{n}/share/doc{i}.txt", text))
            remaining -= size
            i += 1
        if n:
            entries.append(ob.whiteout(f"layer{n - 1}/share/doc0.txt"))
        layers.append(ob.Layer(ob.layer_tar(entries), "gzip"))
    return layers


def time_ours(registry: Registry, ref: str, work: Path) -> float:
    store = work / "store"
    puller = ImagePuller(LayerStore(store), config.parse(registry_settings_toml(registry)))
    bundle = work / "bundle"
    started = time.perf_counter()
    puller.pull_into_bundle(ref, bundle)
    elapsed = time.perf_counter() - started
    puller.remove_bundle(bundle)
    return elapsed


def time_baseline(ref: str, work: Path) -> float:
    layout, bundle = work / "oci", work / "umoci-bundle"
    started = time.perf_counter()
    run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            f"docker://{ref}",
            f"oci:{layout}:b",
        ],
        timeout=900,
    )
    run(["umoci", "unpack", "--image", f"{layout}:b", str(bundle)], timeout=900)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: overlay mounts, chown, and umoci unpack need it")
    for program in ("docker-registry", "skopeo", "umoci"):
        if shutil.which(program) is None:
            raise SystemExit(f"{program} is not installed (scripts/dev.sh setup)")

    with tempfile.TemporaryDirectory(prefix="pull-bench-") as tmp_name:
        tmp = Path(tmp_name)
        started = time.perf_counter()
        layers = build_layers(args.size_mb, args.layers)
        image = ob.build_image(layers)
        raw = sum(len(x.tar) for x in layers) / 1e6
        packed = sum(len(blob) for _, blob in image.layers) / 1e6
        print(
            f"image: {len(layers)} gzip layers, {raw:.1f} MB uncompressed, "
            f"{packed:.1f} MB compressed (built in {time.perf_counter() - started:.1f}s)"
        )
        with Registry(tmp / "registry") as registry:
            digest = registry.upload(image.blobs, image.manifest, "bench/app", "v1")
            ref = f"{registry.host}/bench/app@{digest}"
            ours: list[float] = []
            baseline: list[float] = []

            def ours_once(work: Path) -> float:
                return time_ours(registry, ref, work)

            def baseline_once(work: Path) -> float:
                return time_baseline(ref, work)

            contenders: list[tuple[str, Callable[[Path], float], list[float]]] = [
                ("ours", ours_once, ours),
                ("skopeo+umoci", baseline_once, baseline),
            ]
            for n in range(args.rounds):
                for name, runner, sink in contenders:
                    work = tmp / f"{name}-{n}"
                    work.mkdir()
                    sink.append(runner(work))
                    print(f"  round {n + 1}: {name:13s} {sink[-1]:7.3f} s")
                    shutil.rmtree(work)
            mine, theirs = statistics.median(ours), statistics.median(baseline)
            print(f"cold pull, median of {args.rounds}:")
            print(f"  ours (pull+verify+unpack+mount): {mine:7.3f} s")
            print(f"  skopeo copy + umoci unpack:      {theirs:7.3f} s")
            print(f"  ratio ours/baseline:             {mine / theirs:7.3f}  (target <= 1.0)")

            work = tmp / "cached"
            work.mkdir()
            puller = ImagePuller(
                LayerStore(work / "store"), config.parse(registry_settings_toml(registry))
            )
            puller.pull(ref)
            warm = []
            mounted = []
            for n in range(5):
                t0 = time.perf_counter()
                puller.pull(ref)
                warm.append(time.perf_counter() - t0)
                bundle = work / f"bundle{n}"
                t0 = time.perf_counter()
                puller.pull_into_bundle(ref, bundle)
                mounted.append(time.perf_counter() - t0)
                puller.remove_bundle(bundle)
            print("second pull of the same image (from the store), median of 5:")
            print(f"  pull only:           {statistics.median(warm) * 1000:7.2f} ms")
            print(
                f"  pull + overlay mount:{statistics.median(mounted) * 1000:7.2f} ms  (target < 50)"
            )


if __name__ == "__main__":
    main()
