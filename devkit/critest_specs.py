"""Which critest specs our handler fails on purpose, and what their failure says.

Listed with their reasons in shim/README.md ("refused by design"); the conformance
tier (tests/conformance) checks each fails with its text, not by a timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

# Only a digest of upstream bytes names this image: it cannot be built here.
UNSERVABLE = ("public image with digest should be pulled and removed",)


@dataclass(frozen=True)
class ByDesign:
    """What our handler refuses in a spec, and the text its failure carries."""

    what: str
    message: str


# Specs our handler fails on purpose (shim/README.md, "refused by design"): a pod sharing
# a node namespace at RunPodSandbox (agent/sandbox/hostns.py); a writable hostPath or a
# mount propagation at the container's task Create, i.e. CRI's StartContainer
# (agent/volumes), naming the mount. Spec names as they end.
REFUSAL = "is not supported by the contrast-cc runtime"
WRITABLE_HOST_PATH = "a writable hostPath cannot be provided in the pod-VM"
BY_DESIGN = {
    "runtime should support HostNetwork is true": ByDesign("hostNetwork", f"hostNetwork {REFUSAL}"),
    "runtime should support HostIpc is true": ByDesign("hostIPC", f"hostIPC {REFUSAL}"),
    "runtime should support HostPID": ByDesign("hostPID", f"hostPID {REFUSAL}"),
    "runtime should support portforward in host network": ByDesign(
        "hostNetwork", f"hostNetwork {REFUSAL}"
    ),
    "runtime should support starting container with volume [Conformance]": ByDesign(
        "writable hostPath", WRITABLE_HOST_PATH
    ),
    "runtime should support starting container with volume when host path is a symlink "
    "[Conformance]": ByDesign("writable hostPath", WRITABLE_HOST_PATH),
    "mount with 'rprivate' should not support propagation": ByDesign(
        "writable hostPath", WRITABLE_HOST_PATH
    ),
    "mount with 'rshared' should support propagation from host to container and vice "
    "versa": ByDesign("mount propagation", "mount propagation (rshared) cannot be provided"),
    "mount with 'rslave' should support propagation from host to container": ByDesign(
        "mount propagation", "mount propagation (rslave) cannot be provided"
    ),
    # A readOnly hostPath is a read-only copy throughout: the node's tmpfs beneath it
    # is not a mount of its own in the pod-VM, so a write there fails (never lost).
    "should support non-recursive readonly mounts": ByDesign(
        "a writable mount beneath a readOnly hostPath", "Read-only file system"
    ),
}


# Specs critest skips on our handler but runs on runc: containerd 2.x reports
# RecursiveReadOnlyMounts only for runtimes of type io.containerd.runc.v2 (shim/README.md).
NOT_OFFERED = (
    "should support recursive readonly mounts",
    "should reject a recursive readonly mount with",
)


def not_offered(name: str) -> bool:
    """Whether critest skips ``name`` on our handler for a feature containerd does not
    report for it."""
    return any(part in name for part in NOT_OFFERED)


def by_design(name: str) -> ByDesign | None:
    """What a spec needs that our handler refuses, if anything."""
    return next((design for spec, design in BY_DESIGN.items() if name.endswith(spec)), None)
