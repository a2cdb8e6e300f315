"""The e2e tier owns what it starts, as the integration tier does (a second claim by the
same session is the same owner; the sweep of dead sessions' leftovers is idempotent)."""

from tests.integration.conftest import _owned_session

__all__ = ["_owned_session"]
