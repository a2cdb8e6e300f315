"""The conformance tier owns what it starts, as the integration tier does; it shares the
integration tier's guest image."""

from tests.integration.conftest import _owned_session
from tests.integration.vm.conftest import guest_image

__all__ = ["_owned_session", "guest_image"]
