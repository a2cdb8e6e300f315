"""Registry authentication: ``WWW-Authenticate`` challenges, Basic and Bearer tokens.

The distribution token flow: a request answered 401 with ``Bearer realm=…,service=…,
scope=…`` sends us to the realm (a token server) with our Basic credentials, if any;
its JSON answer's ``token`` (or ``access_token``) goes into ``Authorization: Bearer``.
Tokens are cached per registry and scope and shared by the parallel layer fetches.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from guest.imagepull.errors import AuthError

_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|$)')
MAX_TOKEN_RESPONSE = 1 << 20
DEFAULT_TOKEN_LIFETIME = 60


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercase: "basic" or "bearer"
    params: dict[str, str] = field(default_factory=dict)


def parse_challenge(header: str) -> Challenge:
    """Parse one ``WWW-Authenticate`` value. Raises AuthError when it is not one."""
    scheme, _, rest = header.strip().partition(" ")
    if not scheme:
        raise AuthError("registry sent an empty WWW-Authenticate challenge")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if match is None:
            raise AuthError(f"malformed WWW-Authenticate challenge: {header[:200]!r}")
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare or ""
        params[match.group(1).lower()] = value
        pos = match.end()
    return Challenge(scheme.lower(), params)


def basic_header(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    return f"Basic {token}"


@dataclass(frozen=True)
class TokenResponse:
    status: int
    body: bytes


# (url, headers) -> status and body, at most MAX_TOKEN_RESPONSE bytes of it.
TokenFetcher = Callable[[str, dict[str, str]], TokenResponse]


class Authenticator:
    """Holds credentials for one registry host and the tokens obtained with them."""

    def __init__(
        self, host: str, username: str | None, password: str | None, tls_realm: bool = True
    ) -> None:
        self.host = host
        # Credentials for an HTTPS registry never travel to a plain-HTTP token realm.
        self._tls_realm = tls_realm
        self._username = username
        self._password = password
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._basic = False

    def header_for(self, scope: str) -> str | None:
        """The Authorization value to send pre-emptively for ``scope``, if we have one."""
        with self._lock:
            if self._basic and self._username is not None and self._password is not None:
                return basic_header(self._username, self._password)
            cached = self._tokens.get(scope)
            if cached is not None and cached[1] > time.monotonic():
                return f"Bearer {cached[0]}"
        return None

    def forget(self, scope: str) -> None:
        """Drop the cached token for ``scope`` (the registry refused it)."""
        with self._lock:
            self._tokens.pop(scope, None)

    def answer(
        self, challenge_header: str | None, scope: str, sent: str | None, fetch: TokenFetcher
    ) -> str:
        """The Authorization value answering a 401 whose challenge was ``challenge_header``.

        ``sent`` is what the refused request carried. Raises AuthError when there is no
        way to answer: no credentials, credentials refused, or a token server failing.
        """
        if not challenge_header:
            raise AuthError(f"registry {self.host}: 401 without a WWW-Authenticate challenge")
        challenge = parse_challenge(challenge_header)
        if challenge.scheme == "basic":
            if self._username is None or self._password is None:
                raise AuthError(
                    f"registry {self.host} requires credentials (Basic auth); "
                    "none are configured for it"
                )
            if sent is not None and sent.startswith("Basic "):
                raise AuthError(
                    f"registry {self.host}: credentials for user {self._username!r} "
                    "were rejected (HTTP 401)"
                )
            with self._lock:
                self._basic = True
            return basic_header(self._username, self._password)
        if challenge.scheme == "bearer":
            if sent is not None and sent.startswith("Bearer "):
                raise AuthError(
                    f"registry {self.host}: refused the token for {scope!r} "
                    f"(user {self._username or 'anonymous'!r} may lack pull access)"
                )
            return self._bearer(challenge, scope, fetch)
        raise AuthError(f"registry {self.host}: unsupported auth scheme {challenge.scheme!r}")

    def _bearer(self, challenge: Challenge, scope: str, fetch: TokenFetcher) -> str:
        realm = challenge.params.get("realm")
        if not realm or urlsplit(realm).scheme not in ("http", "https"):
            raise AuthError(f"registry {self.host}: Bearer challenge without a usable realm")
        query = {}
        if "service" in challenge.params:
            query["service"] = challenge.params["service"]
        query["scope"] = challenge.params.get("scope", scope)
        headers = {}
        has_credentials = self._username is not None and self._password is not None
        if has_credentials and self._tls_realm and urlsplit(realm).scheme != "https":
            raise AuthError(
                f"registry {self.host} sends us to token realm {realm} over plain HTTP; "
                "refusing to send credentials there"
            )
        if self._username is not None and self._password is not None:
            headers["Authorization"] = basic_header(self._username, self._password)
        sep = "&" if urlsplit(realm).query else "?"
        response = fetch(f"{realm}{sep}{urlencode(query)}", headers)
        who = repr(self._username) if self._username else "anonymous"
        if response.status in (401, 403):
            raise AuthError(
                f"token server {realm} rejected the credentials for user {who} "
                f"(HTTP {response.status}) for registry {self.host}"
            )
        if response.status != 200:
            raise AuthError(
                f"token server {realm} answered HTTP {response.status} for registry {self.host}"
            )
        try:
            doc = json.loads(response.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise AuthError(f"token server {realm}: answer is not JSON") from err
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise AuthError(f"token server {realm}: answer carries no token")
        lifetime = doc.get("expires_in", DEFAULT_TOKEN_LIFETIME)
        if not isinstance(lifetime, int) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        with self._lock:
            # Renew a little early so a long pull does not present an expired token.
            self._tokens[scope] = (token, time.monotonic() + max(lifetime - 5, 1))
        return f"Bearer {token}"
