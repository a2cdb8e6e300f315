"""The guest writes its own OCI schema version, whatever the host's containerd sends
(containerd 2.3 sends 1.3.0, which the guest's crun 1.8 refuses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from guest.agent.spec import OCI_VERSION, GuestContext, adapt
from tests.integration.guestagent.requests import spec


@pytest.mark.parametrize("host_version", ["1.0.2-dev", "1.1.0", "1.3.0", ""])
def test_oci_version_is_the_guests(host_version: str) -> None:
    request = spec(["sh"])
    request.Version = host_version
    context = GuestContext(container_id="c1", sandbox_files=Path("/run/s"), exists=lambda _: True)
    config = adapt(request, context).config
    assert config["ociVersion"] == OCI_VERSION == "1.0.2"
