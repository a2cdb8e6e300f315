"""The distribution client against in-process HTTP servers on loopback.

What the real docker-registry cannot show: redirects to another host (the Authorization
header must not follow), mirror fallback, proxies from the environment, error bodies.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from guest.imagepull import config
from guest.imagepull.digest import Digest
from guest.imagepull.errors import RegistryError
from guest.imagepull.registry import RegistryClient

DIGEST = Digest.of(b"blob")
Route = Callable[[http.server.BaseHTTPRequestHandler], tuple[int, dict[str, str], bytes]]


@contextmanager
def server(route: Route) -> Iterator[tuple[str, list[tuple[str, dict[str, str]]]]]:
    seen: list[tuple[str, dict[str, str]]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, dict(self.headers)))
            status, headers, body = route(self)
            self.send_response(status)
            for k, v in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_a: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}", seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def client(host: str, **settings: object) -> RegistryClient:
    lines = [f'[registries."{host}"]', "insecure = true"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in settings.items()]
    return RegistryClient(host, config.parse("\n".join(lines)), timeout=5)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)


def test_redirect_to_other_host_drops_authorization() -> None:
    with server(lambda _h: (200, {}, b"blob")) as (storage, storage_seen):

        def registry(h: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
            if "Authorization" not in h.headers:
                return 401, {"WWW-Authenticate": 'Basic realm="r"'}, b""
            return 307, {"Location": f"http://{storage}/signed?x=1"}, b""

        with server(registry) as (host, seen):
            c = client(host, username="u", password="p")
            response = c.blob("app", DIGEST)
            assert response.body.read() == b"blob"
    assert seen[-1][1]["Authorization"].startswith("Basic ")
    assert storage_seen[0][0] == "/signed?x=1"
    assert "Authorization" not in storage_seen[0][1]


def test_mirror_first_then_registry() -> None:
    with (
        server(lambda _h: (404, {}, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"no"}]}')) as (
            mirror,
            mirror_seen,
        ),
        server(lambda _h: (200, {}, b"blob")) as (host, _),
    ):
        lines = f'[registries."{host}"]\ninsecure = true\nmirror = "{mirror}"\n'
        lines += f'[registries."{mirror}"]\ninsecure = true\n'
        c = RegistryClient(host, config.parse(lines), timeout=5)
        assert c.blob("app", DIGEST).body.read() == b"blob"
    assert mirror_seen[0][0] == f"/v2/app/blobs/{DIGEST}"


def test_error_body_in_message() -> None:
    body = b'{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}'
    expected = r"HTTP 404 \(MANIFEST_UNKNOWN: manifest unknown\)"
    with (
        server(lambda _h: (404, {}, body)) as (host, _),
        pytest.raises(RegistryError, match=expected),
    ):
        client(host).manifest("app", DIGEST)


def test_proxy_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with server(lambda _h: (200, {}, b"via proxy")) as (proxy, seen):
        monkeypatch.setenv("http_proxy", f"http://{proxy}")
        c = client("registry.invalid:5000")
        assert c.blob("app", DIGEST).body.read() == b"via proxy"
    assert seen[0][0] == f"http://registry.invalid:5000/v2/app/blobs/{DIGEST}"


def test_unreachable_registry() -> None:
    with server(lambda _h: (200, {}, b"")) as (host, _):
        pass
    with pytest.raises(RegistryError, match="cannot reach"):
        client(host).blob("app", DIGEST)


def test_refused_cached_token_is_renewed_once() -> None:
    tokens = iter(["T1", "T2"])
    issued: list[str] = []

    def token_server(h: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
        issued.append(next(tokens))
        return 200, {}, json.dumps({"token": issued[-1], "expires_in": 300}).encode()

    with server(token_server) as (auth_host, _):

        def registry(h: http.server.BaseHTTPRequestHandler) -> tuple[int, dict[str, str], bytes]:
            # Accepts T1 once, then only T2 (as if T1 had been revoked).
            ok = h.headers.get("Authorization") == f"Bearer {issued[-1]}" if issued else False
            if ok and not (issued[-1] == "T1" and h.path.endswith("second")):
                return 200, {}, b"blob"
            challenge = f'Bearer realm="http://{auth_host}/token",service="reg"'
            return 401, {"WWW-Authenticate": challenge}, b""

        with server(registry) as (host, seen):
            endpoint = client(host).endpoints[0]
            assert endpoint.get("app", "first").body.read() == b"blob"
            assert endpoint.get("app", "second").body.read() == b"blob"
    assert issued == ["T1", "T2"]
    assert [h.get("Authorization") for _, h in seen] == [
        None,
        "Bearer T1",
        "Bearer T1",
        "Bearer T2",
    ]
