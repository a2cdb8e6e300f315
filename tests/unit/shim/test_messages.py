"""shim.messages, the entry's hand-written protobuf: every encoder writes what the
generated class serializes, every decoder reads what the generated class parses, and
where the hand decoders answer for random and mutated input, the protobuf runtime
answers the same (else they leave it to the runtime)."""

from __future__ import annotations

import random

import pytest
from google.protobuf import any_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from api.containerd.runtime.bootstrap.v1 import bootstrap_pb2
from api.containerd.task.v2 import shim_pb2
from api.containerd.types import introspection_pb2
from api.node import relay_pb2
from api.node import shim_pb2 as node_pb2
from shim import bootstrap, messages
from shim.messages import AnyMessage
from tests.unit.shim.test_bootstrap import CONTAINERD_2_3_4, options

ANYS = [
    any_pb2.Any(),
    any_pb2.Any(type_url="runtimeoptions.v1.Options"),
    any_pb2.Any(value=b"\x00\xff"),
    options("/etc/x.toml"),
    any_pb2.Any(type_url="x/ü", value=b"v" * 300),
]


@pytest.mark.parametrize("given", [None, *ANYS])
@pytest.mark.parametrize("text", ["", "k8s.io", "ü" * 70])
def test_register_request_is_the_generated_serialization(
    given: any_pb2.Any | None, text: str
) -> None:
    light = None if given is None else AnyMessage(given.type_url, given.value)
    generated = node_pb2.RegisterRequest(
        namespace=text, id="c1", bundle=text, ttrpc_address="/t", grpc_address=text,
        options=given,
    )  # fmt: skip
    assert messages.register_request(text, "c1", text, "/t", text, light) == (
        generated.SerializeToString()
    )


@pytest.mark.parametrize("given", ANYS)
def test_any_reads_and_writes_as_the_generated_any(given: any_pb2.Any) -> None:
    data = given.SerializeToString()
    parsed = AnyMessage.parse(data)
    assert (parsed.type_url, parsed.value) == (given.type_url, given.value)
    assert parsed.serialize() == data


def test_small_messages_are_the_generated_serializations() -> None:
    for namespace in ("", "default"):
        assert messages.listen_request(namespace) == (
            relay_pb2.ListenRequest(namespace=namespace).SerializeToString()
        )
    result = bootstrap_pb2.BootstrapResult(version=2, address="unix:///x.sock", protocol="ttrpc")
    assert messages.bootstrap_result(2, "unix:///x.sock", "ttrpc") == result.SerializeToString()
    assert messages.bootstrap_result(0, "", "") == b""
    for answer in ("", "unix:///run/contrast/ns/k8s.io.sock"):
        for reply in (relay_pb2.ListenResponse, node_pb2.RegisterResponse):
            assert messages.address_of(reply(address=answer).SerializeToString()) == answer


@pytest.mark.parametrize("given", [None, *ANYS])
def test_runtime_info_is_the_generated_serialization(given: any_pb2.Any | None) -> None:
    info = introspection_pb2.RuntimeInfo(
        name="n", version=introspection_pb2.RuntimeVersion(version="1.0")
    )
    light = None
    if given is not None:
        info.options.CopyFrom(given)
        light = AnyMessage(given.type_url, given.value)
    assert messages.runtime_info("n", "1.0", light) == info.SerializeToString()


def test_bootstrap_params_of_containerd_2_3_4() -> None:
    generated = bootstrap_pb2.BootstrapParams.FromString(CONTAINERD_2_3_4)
    params = messages.BootstrapParams.parse(CONTAINERD_2_3_4)
    assert (params.instance_id, params.namespace) == ("c3", "default")
    assert params.ttrpc_address == generated.containerd_ttrpc_address
    assert params.grpc_address == generated.containerd_grpc_address
    assert params.extensions == [
        AnyMessage(ext.value.type_url, ext.value.value) for ext in generated.extensions
    ]


@pytest.mark.parametrize(
    "data",
    [b"\x0a\x05ab", b"\x0b\x0c", b"\x00\x01", b"\x08\xff", b"\x0a\x01\xff",
     b"\x42\x04\x0a\x02\x08\x01", b"\x1a\x00"],
)  # fmt: skip
def test_unusual_input_is_left_to_the_runtime(data: bytes) -> None:
    """Truncated, a group, field 0, a bad varint, bad UTF-8, an odd Any, log_level as
    bytes."""
    with pytest.raises(messages.Unusual):
        messages.BootstrapParams.parse(data)


def _protobuf_answer(data: bytes, task_id: str, namespace: str) -> object:
    try:
        return bootstrap._read_with_protobuf(data, task_id, namespace)
    except bootstrap.BootstrapError as err:
        return err


def _seeds() -> list[bytes]:
    ext = [bootstrap_pb2.Extension(value=value) for value in ANYS]
    return [
        CONTAINERD_2_3_4,
        *(value.SerializeToString() for value in ANYS),
        bootstrap_pb2.BootstrapParams(instance_id="c1", namespace="default").SerializeToString(),
        bootstrap_pb2.BootstrapParams(
            instance_id="c1", namespace="default", log_level=bootstrap_pb2.LOG_LEVEL_DEBUG,
            containerd_ttrpc_address="/t", extensions=[*ext, bootstrap_pb2.Extension()],
            socket_dir="/s",
        ).SerializeToString(),
    ]  # fmt: skip


def _mutations(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 3)):
        choice = rng.random()
        where = rng.randrange(len(data) + 1)
        if choice < 0.4 and data:
            data[min(where, len(data) - 1)] = rng.randrange(256)
        elif choice < 0.6:
            data[where:where] = bytes([rng.randrange(256)])
        elif choice < 0.8:
            del data[where:]
        else:
            data += rng.choice(_seeds())
    return bytes(data)


def test_start_input_by_hand_agrees_with_the_runtime_where_it_answers() -> None:
    rng = random.Random(16)
    answered = 0
    for round_ in range(4000):
        seed = rng.choice(_seeds())
        data = seed if round_ < 20 else _mutations(rng, seed)
        if not data:
            continue
        for task_id, namespace in (("c1", "default"), ("c3", "default")):
            try:
                hand = bootstrap._read_by_hand(data, task_id, namespace)
            except messages.Unusual:
                continue
            answered += 1
            assert hand == _protobuf_answer(data, task_id, namespace), data.hex()
    assert answered > 1000  # the hand path is the usual one, not the exception


def test_unusual_stdin_gets_the_runtimes_answer_and_message() -> None:
    unknown_field = any_pb2.Any.FromString(b"\x0a\x01x\x18\x05")  # kept by the runtime
    given = bootstrap.read_start_input(b"\x0a\x01x\x18\x05", "c1", "default")
    assert given.options is not None
    assert given.options.serialize() == unknown_field.SerializeToString()
    with pytest.raises(bootstrap.BootstrapError, match=r"nor runtime options \(a protobuf Any\)"):
        bootstrap.read_start_input(b"\x0a\x05ab", "c1", "default")
    with pytest.raises(bootstrap.BootstrapError, match="the options on stdin are not a protobuf"):
        bootstrap.runtime_info(b"\x0a\x05ab")


def test_cleanup_request_is_the_generated_serialization() -> None:
    for text in ("", "k8s.io", "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1"):
        generated = node_pb2.CleanupRequest(namespace=text, id="c1", bundle=text)
        assert messages.cleanup_request(text, "c1", text) == generated.SerializeToString()


DELETES = [
    shim_pb2.DeleteResponse(),
    shim_pb2.DeleteResponse(pid=42, exit_status=137),
    shim_pb2.DeleteResponse(exit_status=(1 << 32) - 1, exited_at=Timestamp(seconds=1, nanos=5)),
    shim_pb2.DeleteResponse(exited_at=Timestamp()),
    shim_pb2.DeleteResponse(pid=1, exited_at=Timestamp(seconds=-5, nanos=-(1 << 31))),
]


def test_delete_responses_of_the_runtime_are_printed_as_they_came() -> None:
    for response in DELETES:
        data = response.SerializeToString()
        assert messages.canonical_delete_response(data) == data


def test_delete_response_by_hand_agrees_with_the_runtime_where_it_answers() -> None:
    rng = random.Random(3)
    seeds = [response.SerializeToString() for response in DELETES]
    answered = refused = 0
    for round_ in range(4000):
        data = rng.choice(seeds)
        if round_ >= len(seeds):
            mutated = bytearray(data)
            where = rng.randrange(len(mutated) + 1)
            if rng.random() < 0.5 and mutated:
                mutated[min(where, len(mutated) - 1)] = rng.randrange(256)
            else:
                mutated[where:where] = bytes([rng.randrange(256)])
            data = bytes(mutated)
        try:
            hand = messages.canonical_delete_response(data)
        except messages.Unusual:
            refused += 1
            continue
        answered += 1
        assert hand == shim_pb2.DeleteResponse.FromString(data).SerializeToString(), data.hex()
    assert answered > 100 and refused > 100
