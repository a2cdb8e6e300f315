"""Challenges, Basic and Bearer token flows (token server faked by a function)."""

from __future__ import annotations

import base64
import json

import pytest

from guest.imagepull.auth import Authenticator, TokenResponse, parse_challenge
from guest.imagepull.errors import AuthError

BEARER = 'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"'


def test_parse_challenge() -> None:
    c = parse_challenge(BEARER)
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull",
    }
    assert parse_challenge('Basic realm="a \\"q\\" b"').params["realm"] == 'a "q" b'
    with pytest.raises(AuthError, match="malformed"):
        parse_challenge('Bearer realm="unterminated')


def test_bearer_flow_sends_credentials_and_caches_token() -> None:
    seen: list[tuple[str, dict[str, str]]] = []

    def fetch(url: str, headers: dict[str, str]) -> TokenResponse:
        seen.append((url, headers))
        return TokenResponse(200, json.dumps({"token": "T1", "expires_in": 300}).encode())

    auth = Authenticator("reg.example", "user", "pw")
    header = auth.answer(BEARER, "repository:a/b:pull", None, fetch)
    assert header == "Bearer T1"
    url, headers = seen[0]
    assert url == "https://auth.example/token?service=reg&scope=repository%3Aa%2Fb%3Apull"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"user:pw").decode()
    assert auth.header_for("repository:a/b:pull") == "Bearer T1"
    assert auth.header_for("repository:other:pull") is None


def test_token_server_rejecting_credentials() -> None:
    auth = Authenticator("reg.example", "user", "wrong")
    with pytest.raises(AuthError, match=r"rejected the credentials for user 'user' \(HTTP 401\)"):
        auth.answer(BEARER, "s", None, lambda _u, _h: TokenResponse(401, b"{}"))


def test_refused_token_is_not_retried_forever() -> None:
    auth = Authenticator("reg.example", None, None)
    with pytest.raises(AuthError, match="refused the token"):
        auth.answer(BEARER, "s", "Bearer old", lambda _u, _h: TokenResponse(200, b"{}"))


def test_basic() -> None:
    anonymous = Authenticator("reg.example", None, None)
    with pytest.raises(AuthError, match="requires credentials"):
        anonymous.answer('Basic realm="r"', "s", None, lambda _u, _h: TokenResponse(500, b""))
    auth = Authenticator("reg.example", "u", "p")
    header = auth.answer('Basic realm="r"', "s", None, lambda _u, _h: TokenResponse(500, b""))
    assert header.startswith("Basic ")
    assert auth.header_for("any") == header
    with pytest.raises(AuthError, match="credentials for user 'u' were rejected"):
        auth.answer('Basic realm="r"', "s", header, lambda _u, _h: TokenResponse(500, b""))


def test_token_answer_without_token() -> None:
    auth = Authenticator("reg.example", None, None)
    with pytest.raises(AuthError, match="carries no token"):
        auth.answer(BEARER, "s", None, lambda _u, _h: TokenResponse(200, b'{"x": 1}'))


def test_credentials_never_go_to_a_plain_http_realm() -> None:
    auth = Authenticator("reg.example", "u", "p", tls_realm=True)
    challenge = 'Bearer realm="http://auth.example/token",service="reg"'
    with pytest.raises(AuthError, match="over plain HTTP; refusing to send credentials"):
        auth.answer(challenge, "s", None, lambda _u, _h: TokenResponse(200, b'{"token": "t"}'))
    anonymous = Authenticator("reg.example", None, None, tls_realm=True)
    assert (
        anonymous.answer(challenge, "s", None, lambda _u, _h: TokenResponse(200, b'{"token": "t"}'))
        == "Bearer t"
    )
