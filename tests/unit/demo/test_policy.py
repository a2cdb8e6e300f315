"""The demo's policy, evaluated by the guest agent's own policy engine: exactly the
pinned image with the demo's command may start; every exec is refused with the reason."""

from __future__ import annotations

from agent.demo import pod, policy
from api.kata import agent_pb2, oci_pb2, oci_process_pb2
from guest.agent import policyinput
from guest.agent.policy import Policy
from guest.initdata import codec, document

IMAGE = "10.213.47.3:5000/demo/busybox@sha256:" + "a" * 64


def create(
    args: list[str], image: str = IMAGE, kind: str = "container"
) -> agent_pb2.CreateContainerRequest:
    return agent_pb2.CreateContainerRequest(
        container_id="c1",
        OCI=oci_pb2.Spec(
            Process=oci_process_pb2.Process(Args=args),
            Annotations={"io.kubernetes.cri.container-type": kind},
        ),
        storages=[agent_pb2.Storage(driver="image_guest_pull", source=image)] if image else [],
    )


def allowed(engine: Policy, request: agent_pb2.CreateContainerRequest) -> bool:
    return engine.evaluate("CreateContainerRequest", policyinput.to_input(request)).allowed


def test_only_the_pinned_image_and_command_start() -> None:
    engine = Policy(policy.policy(IMAGE, pod.ARGS))
    assert allowed(engine, create(pod.ARGS))
    assert not allowed(engine, create(["/bin/sh"]))
    assert not allowed(engine, create(pod.ARGS, IMAGE.replace("a" * 64, "b" * 64)))
    assert not allowed(engine, create(pod.ARGS, IMAGE.split("@", maxsplit=1)[0] + ":v1"))
    assert not allowed(engine, create(pod.ARGS, kind="sandbox"))  # no image in a pause


def test_the_pods_sandbox_container_starts_without_an_image() -> None:
    engine = Policy(policy.policy(IMAGE, pod.ARGS))
    assert allowed(engine, create(["/pause"], image="", kind="sandbox"))
    assert not allowed(engine, create(["/pause"], image="", kind="container"))


def test_exec_is_refused_with_the_policys_reason() -> None:
    engine = Policy(policy.policy(IMAGE, pod.ARGS))
    request = agent_pb2.ExecProcessRequest(process=oci_process_pb2.Process(Args=pod.DENIED_ARGS))
    decision = engine.evaluate("ExecProcessRequest", policyinput.to_input(request))
    assert not decision.allowed
    assert policy.REASON in decision.reason


def test_initdata_carries_the_policy_and_registry() -> None:
    doc = policy.initdata(IMAGE, pod.ARGS, "10.213.47.3:5000")
    raw = codec.decode_annotation(policy.annotation(doc))
    parsed = document.parse(raw)
    assert parsed.digest == doc.digest
    assert parsed.data[document.POLICY_NAME] == policy.policy(IMAGE, pod.ARGS)
    assert parsed.data["imagepull.toml"] == '[registries."10.213.47.3:5000"]\ninsecure = true\n'
