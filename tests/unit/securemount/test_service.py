"""The ttrpc surface: request checks, statuses, and the policy in front of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import ttrpc
from api.guest import securemount_pb2
from guest.securemount import errors, service
from guest.securemount.device import BlockDevice
from guest.securemount.luks import Mapping
from guest.securemount.store import Mounted

GOOD = {"deviceId": "254:32", "encryptionType": "luks2", "dataIntegrity": "true"}


def request(**changes: Any) -> securemount_pb2.SecureMountRequest:
    fields: dict[str, Any] = {
        "volume_type": "block-device", "options": GOOD, "mount_point": "/run/contrast/images",
    }  # fmt: skip
    fields.update(changes)
    return securemount_pb2.SecureMountRequest(**fields)


def test_kata_and_contrast_requests_parse() -> None:
    parsed = service.parse(request())
    assert parsed == service.MountRequest("254:32", Path("/run/contrast/images"))
    assert service.parse(request(volume_type="BlockDevice")).device_id == "254:32"
    relaxed = service.parse(request(options={**GOOD, "dataIntegrity": "false"}))
    assert relaxed.device_id == "254:32"  # integrity is on regardless


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"volume_type": "alibaba-cloud-oss"}, "volume_type 'alibaba-cloud-oss'"),
        ({"options": {**GOOD, "key": "aG9zdC1rZXk="}}, r"options \['key'\] are not supported"),
        ({"options": {**GOOD, "deviceId": ""}}, "deviceId"),
        ({"options": {**GOOD, "encryptionType": "LUKS"}}, "encryptionType"),
        ({"options": {k: v for k, v in GOOD.items() if k != "dataIntegrity"}}, "dataIntegrity"),
        ({"flags": ["ro"]}, r"flags \['ro'\]"),
        ({"mount_point": ""}, "mount_point"),
        ({"mount_point": "run/images"}, "mount_point"),
        ({"mount_point": "/run/contrast/../measured-cfg"}, "mount_point"),
    ],
)
def test_malformed_requests_are_refused(changes: dict[str, Any], named: str) -> None:
    with pytest.raises(errors.InvalidRequest, match=named):
        service.parse(request(**changes))


class FakeStore:
    def __init__(self, failure: errors.SecureMountError | None = None) -> None:
        self.calls: list[tuple[str, Path]] = []
        self.failure = failure

    async def mount(self, device_id: str, mount_point: Path) -> Mounted:
        self.calls.append((device_id, mount_point))
        if self.failure is not None:
            raise self.failure
        device = BlockDevice("vdc", Path("/dev/vdc"), 254, 32, 1 << 30)
        return Mounted(device, Mapping("contrast-store"), mount_point, 1.0)


async def test_service_answers_the_mount_path() -> None:
    store = FakeStore()
    reply = await service.SecureMountService(store).SecureMount(request(), None)  # type: ignore[arg-type]
    assert reply.mount_path == "/run/contrast/images"
    assert store.calls == [("254:32", Path("/run/contrast/images"))]


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (errors.DeviceError("secure mount of /dev/vdc: size check failed"),
         ttrpc.FailedPrecondition),
        (errors.StateError("already on /dev/vdb"), ttrpc.FailedPrecondition),
        (errors.InvalidRequest("not the image store"), ttrpc.InvalidArgument),
        (errors.StepError("/dev/vdc (254:32)", "luksFormat", "exited 1"), ttrpc.Internal),
    ],
)  # fmt: skip
async def test_failures_become_statuses_with_the_message(
    failure: errors.SecureMountError, status: type[ttrpc.StatusError]
) -> None:
    svc = service.SecureMountService(FakeStore(failure))  # type: ignore[arg-type]
    with pytest.raises(status) as raised:
        await svc.SecureMount(request(), None)  # type: ignore[arg-type]
    assert raised.value.message == str(failure)


async def test_bad_request_never_reaches_the_store() -> None:
    store = FakeStore()
    with pytest.raises(ttrpc.InvalidArgument, match="encryptionType"):
        await service.SecureMountService(store).SecureMount(  # type: ignore[arg-type]
            request(options={**GOOD, "encryptionType": "plain"}), None  # type: ignore[arg-type]
        )
    assert store.calls == []


class FakeAgent:
    """What PolicyCheckedSecureMount uses of the AgentService: check and the reaper."""

    def __init__(self, allow: bool) -> None:
        self.allow = allow
        self.checked: list[str] = []
        self.containers = type("C", (), {"reaper": object()})()

    async def check(self, message: Any) -> None:
        self.checked.append(message.DESCRIPTOR.name)
        if not self.allow:
            raise ttrpc.PermissionDenied(f"{message.DESCRIPTOR.name} is blocked by policy")


async def test_policy_decides_before_anything_is_formatted(tmp_path: Path) -> None:
    agent = FakeAgent(allow=False)
    guarded = service.PolicyCheckedSecureMount(agent, tmp_path / "images")  # type: ignore[arg-type]
    with pytest.raises(ttrpc.PermissionDenied, match="SecureMountRequest is blocked by policy"):
        await guarded.SecureMount(request(), None)  # type: ignore[arg-type]
    assert agent.checked == ["SecureMountRequest"]
    assert not (tmp_path / "images").exists()


async def test_allowed_request_goes_to_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guest.securemount import store

    looked_up: list[str] = []

    def resolve(device_id: str, *_: Any) -> BlockDevice:
        looked_up.append(device_id)
        raise errors.DeviceError(f"no block device {device_id} in this guest")

    monkeypatch.setattr(store, "resolve", resolve)
    agent = FakeAgent(allow=True)
    guarded = service.PolicyCheckedSecureMount(agent, tmp_path / "images")  # type: ignore[arg-type]
    with pytest.raises(ttrpc.FailedPrecondition, match="254:32: device lookup failed: no block"):
        await guarded.SecureMount(request(), None)  # type: ignore[arg-type]
    assert (agent.checked, looked_up) == (["SecureMountRequest"], ["254:32"])
