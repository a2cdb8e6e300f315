"""``start``'s stdin and answer: containerd 1.6-2.2's runtime options Any and plain
address, containerd 2.3's BootstrapParams and BootstrapResult."""

from __future__ import annotations

import pytest
from google.protobuf import any_pb2

from api.containerd.runtime.bootstrap.v1 import bootstrap_pb2
from api.containerd.types import introspection_pb2
from api.runtimeoptions.v1 import api_pb2 as runtimeoptions
from shim import bootstrap

ADDRESS = "unix:///run/contrast/ns/default.sock"
# What containerd v2.3.4 wrote on stdin for `ctr run --runtime-config-path /x/y.toml ... c3`
# (captured from the real binary with a recording shim).
CONTAINERD_2_3_4 = bytes.fromhex(
    "0a026333120764656661756c74220676322e332e342a252f72756e2f636f6e7461696e6572642f636f"
    "6e7461696e6572642e736f636b2e747472706332182f746d702f703270726f62652f773233342f632e"
    "736f636b3a1c2f6f70742f70656572732f636f6e7461696e6572642d76322e332e34422a0a280a1972"
    "756e74696d656f7074696f6e732e76312e4f7074696f6e73120b12092f782f792e746f6d6c4a112f72"
    "756e2f636f6e7461696e6572642f73"
)


def options(path: str) -> any_pb2.Any:
    value = runtimeoptions.Options(config_path=path).SerializeToString()
    return any_pb2.Any(type_url="runtimeoptions.v1.Options", value=value)


def config_path(given: bootstrap.StartInput) -> str:
    assert given.options is not None
    assert given.options.type_url == "runtimeoptions.v1.Options"
    return runtimeoptions.Options.FromString(given.options.value).config_path


def test_containerd_2_3_4_bootstrap_params_carry_the_options_and_addresses() -> None:
    given = bootstrap.read_start_input(CONTAINERD_2_3_4, "c3", "default")
    assert given.bootstrap
    assert config_path(given) == "/x/y.toml"
    assert given.ttrpc_address == "/run/containerd/containerd.sock.ttrpc"
    assert given.grpc_address == "/tmp/p2probe/w234/c.sock"


def test_bootstrap_without_options_is_no_options_not_an_any_named_by_the_id() -> None:
    """The bug containerd 2.3.4 showed: ``runtime options of type 'c2'``."""
    params = bootstrap_pb2.BootstrapParams(instance_id="c2", namespace="default")
    given = bootstrap.read_start_input(params.SerializeToString(), "c2", "default")
    assert given.bootstrap
    assert given.options is None


def test_bootstrap_prefers_the_runtime_options_among_several_extensions() -> None:
    other = any_pb2.Any(type_url="containerd.io/cri.v1.PodSandboxConfig", value=b"\x0a\x01x")
    params = bootstrap_pb2.BootstrapParams(
        instance_id="c1",
        namespace="k8s.io",
        extensions=[
            bootstrap_pb2.Extension(value=other),
            bootstrap_pb2.Extension(value=options("/etc/r.toml")),
        ],
    )
    given = bootstrap.read_start_input(params.SerializeToString(), "c1", "k8s.io")
    assert config_path(given) == "/etc/r.toml"


@pytest.mark.parametrize("task_id", ["c1", "runtimeoptions.v1.Options"])
def test_a_legacy_any_stays_runtime_options(task_id: str) -> None:
    """An Any decodes as BootstrapParams too; only a matching id and namespace make it one
    (here the namespace never matches the Any's value)."""
    data = options("/etc/x.toml").SerializeToString()
    given = bootstrap.read_start_input(data, task_id, "default")
    assert not given.bootstrap
    assert config_path(given) == "/etc/x.toml"
    assert (given.ttrpc_address, given.grpc_address) == ("", "")


def test_params_for_another_task_are_not_taken_for_ours() -> None:
    params = bootstrap_pb2.BootstrapParams(instance_id="other", namespace="default")
    given = bootstrap.read_start_input(params.SerializeToString(), "c1", "default")
    assert not given.bootstrap  # read as an Any (whatever it names, the daemon judges it)


def test_empty_stdin_is_no_options() -> None:
    assert bootstrap.read_start_input(b"", "c1", "default") == bootstrap.StartInput(None)


def test_garbage_on_stdin_is_an_error_naming_the_task() -> None:
    with pytest.raises(bootstrap.BootstrapError, match="for task c1 in namespace 'default'"):
        bootstrap.read_start_input(b"\xff\xff\xff", "c1", "default")


def test_answer_is_a_bootstrap_result_only_when_containerd_sent_params() -> None:
    legacy = bootstrap.start_answer(ADDRESS, bootstrap.StartInput(None))
    assert legacy == ADDRESS.encode()
    params = bootstrap_pb2.BootstrapParams(instance_id="c1", namespace="default")
    given = bootstrap.read_start_input(params.SerializeToString(), "c1", "default")
    result = bootstrap_pb2.BootstrapResult.FromString(bootstrap.start_answer(ADDRESS, given))
    assert (result.version, result.address, result.protocol) == (2, ADDRESS, "ttrpc")


def test_info_names_the_runtime_and_echoes_the_options() -> None:
    given = options("/etc/x.toml")
    info = introspection_pb2.RuntimeInfo.FromString(
        bootstrap.runtime_info(given.SerializeToString())
    )
    assert info.name == "io.containerd.contrast-cc.v2"
    assert info.version.version == bootstrap.SHIM_VERSION
    assert info.options == given
    bare = introspection_pb2.RuntimeInfo.FromString(bootstrap.runtime_info(b""))
    assert not bare.HasField("options")
    with pytest.raises(bootstrap.BootstrapError, match="not a protobuf Any"):
        bootstrap.runtime_info(b"\xff\xff")
