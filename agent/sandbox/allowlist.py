"""The allow-list through which pod annotations may reach a pod-VM.

containerd passes the pod's ``io.katacontainers.*`` annotations (the installer sets
``pod_annotations``) into the sandbox container's OCI spec. Only those named in the
runtime config's ``[annotations] allowed`` list are honoured, each with a validated
value; any other ``io.katacontainers.*`` annotation fails sandbox creation, naming it,
so a pod never runs with a setting it asked for and silently did not get.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.sandbox.config import (
    INITDATA_ANNOTATION,
    MEMORY_ANNOTATION,
    VCPUS_ANNOTATION,
    RuntimeConfig,
)
from agent.sandbox.errors import AnnotationError

PREFIX = "io.katacontainers."
_DECIMAL = re.compile(r"[0-9]{1,9}\Z")


@dataclass(frozen=True)
class PodVmSettings:
    """What the pod's annotations decide about its VM, after validation."""

    vcpus: int
    memory_mib: int
    initdata: str | None


def _integer(annotations: Mapping[str, str], key: str, low: int, high: int) -> int | None:
    value = annotations.get(key)
    if value is None:
        return None
    if not _DECIMAL.match(value) or not low <= int(value) <= high:
        raise AnnotationError(f"annotation {key}: {value!r} is not an integer in {low}..{high}")
    return int(value)


def vm_settings(annotations: Mapping[str, str], config: RuntimeConfig) -> PodVmSettings:
    """The VM settings for a pod; raises AnnotationError for a refused annotation."""
    for key in sorted(annotations):
        if key.startswith(PREFIX) and key not in config.allowed_annotations:
            raise AnnotationError(
                f"annotation {key} is not allowed by the runtime config {config.path}"
            )
    vcpus = _integer(annotations, VCPUS_ANNOTATION, 1, config.vm.max_vcpus)
    memory = _integer(annotations, MEMORY_ANNOTATION, 64, config.vm.max_memory_mib)
    return PodVmSettings(
        vcpus=vcpus if vcpus is not None else config.vm.vcpus,
        memory_mib=memory if memory is not None else config.vm.memory_mib,
        initdata=annotations.get(INITDATA_ANNOTATION),
    )
