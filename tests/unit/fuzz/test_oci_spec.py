"""The OCI spec's two conversions on arbitrary input: the host's config.json to the
agent's Spec (agent/sandbox/oci.py), and the guest's Spec to the config.json crun
gets (guest/agent/spec.py). Every outcome is a value or our own error (BackendError on
the host, InvalidRequest in the guest); what the guest writes is JSON."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from agent.sandbox import oci
from agent.sandbox.errors import BackendError
from api.kata import oci_linux_pb2, oci_pb2, oci_process_pb2
from guest.agent import spec as guest_spec
from guest.agent.errors import InvalidRequest
from tests.unit.fuzz.protos import messages, oci_json
from tests.unit.fuzz.settings import fuzz

JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=30,
)
CONVERSIONS = [
    (oci.spec, oci_pb2.Spec.DESCRIPTOR),
    (oci.process, oci_process_pb2.Process.DESCRIPTOR),
    (oci.resources, oci_linux_pb2.LinuxResources.DESCRIPTOR),
]


def host_converts(convert: Any, data: Any) -> Any:
    try:
        converted = convert(data)
    except BackendError:
        event("host: refused")
        return None
    event("host: converted")
    return converted


@fuzz
@given(st.sampled_from(CONVERSIONS).flatmap(lambda c: st.tuples(st.just(c[0]), oci_json(c[1]))))
def test_the_host_converts_oci_shaped_json_or_names_the_problem(case: tuple[Any, Any]) -> None:
    convert, data = case
    host_converts(convert, data)


@fuzz
@given(st.sampled_from([c[0] for c in CONVERSIONS]), JSON)
def test_the_host_converts_any_json_or_names_the_problem(convert: Any, data: Any) -> None:
    host_converts(convert, data)


def guest_context() -> guest_spec.GuestContext:
    # Only what CopyFile and the emptyDir volumes made "exists"; the host is not asked.
    return guest_spec.GuestContext(
        "c1", sandbox_pid=1, exists=lambda path: path.startswith(guest_spec.SHARED_PREFIXES)
    )


def guest_adapts(message: oci_pb2.Spec) -> None:
    try:
        adapted = guest_spec.adapt(message, guest_context())
    except InvalidRequest as err:
        event(f"refused: {str(err)[:25]}")
        return
    event("adapted")
    json.dumps(adapted.config)  # crun gets it as config.json
    assert adapted.config["root"]["path"] == "rootfs"
    assert adapted.config["linux"]["cgroupsPath"] == "/contrast/c1"
    for mount in adapted.config["mounts"]:
        if mount.get("type") == "bind":
            source = mount["source"]
            assert source.startswith(guest_spec.SHARED_PREFIXES) or source.startswith(
                "/run/contrast"
            ) or "sandbox" in source, mount


@st.composite
def runnable_specs(draw: st.DrawFn) -> Any:
    """OCI-shaped JSON that usually has process args (else the guest stops at once)."""
    data = draw(oci_json(oci_pb2.Spec.DESCRIPTOR))
    if isinstance(data, dict) and draw(st.integers(0, 9)) > 2:
        process = data.get("process")
        process = process if isinstance(process, dict) else {}
        process["args"] = draw(st.lists(st.text(max_size=8), min_size=1, max_size=3))
        data["process"] = process
        data.pop("unknownKey", None)
    return data


@fuzz
@given(runnable_specs())
def test_host_json_through_both_conversions(data: Any) -> None:
    message = host_converts(oci.spec, data)
    if message is not None:
        guest_adapts(message)


@fuzz
@given(messages(oci_pb2.Spec.DESCRIPTOR))
def test_the_guest_adapts_any_spec_or_refuses_it(message: oci_pb2.Spec) -> None:
    guest_adapts(message)


@fuzz
@given(messages(oci_linux_pb2.LinuxResources.DESCRIPTOR))
def test_the_guest_converts_any_resources(message: oci_linux_pb2.LinuxResources) -> None:
    with contextlib.suppress(InvalidRequest):
        json.dumps(guest_spec.resources(message))


@pytest.mark.parametrize(
    ("convert", "data", "where"),
    [
        (oci.process, {"consoleSize": {"height": -1}}, "process.consoleSize.height: -1"),
        (oci.process, {"user": {"uid": 2**32}}, f"process.user.uid: {2**32}"),
        (oci.spec, {"process": {"rlimits": [{"hard": 2**64}]}}, "process.rlimits[0].hard"),
        (oci.resources, {"pids": {"limit": -(2**63) - 1}}, "linux.resources.pids.limit"),
    ],
)
def test_an_integer_out_of_its_range_names_its_path(convert: Any, data: Any, where: str) -> None:
    # Found by the fuzzer above (CONTRAST_FUZZ=long): protobuf's bare "ValueError: Value
    # out of range: -1" escaped the conversion (the shim's Create/Exec) before.
    with pytest.raises(BackendError, match=rf"^OCI spec {re.escape(where)}.* is out of range"):
        convert(data)
