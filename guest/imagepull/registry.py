"""OCI distribution client: manifests and blobs over HTTPS (or HTTP for insecure hosts).

Proxies come from the environment (``https_proxy``, ``no_proxy``, …) through urllib's
ProxyHandler. Redirects are followed, dropping our Authorization header when the target
host differs (blob storage backends sign their own URLs). Nothing here trusts content:
callers wrap every body in a ``VerifyingReader``.
"""

from __future__ import annotations

import json
import logging
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPMessage
from typing import IO, Any, Protocol
from urllib.parse import urlsplit

from guest.imagepull import manifest as mf
from guest.imagepull.auth import Authenticator, TokenResponse
from guest.imagepull.config import PullerConfig, RegistrySettings
from guest.imagepull.digest import Digest
from guest.imagepull.errors import AuthError, RegistryError
from guest.imagepull.reference import DOCKER_HUB

log = logging.getLogger(__name__)
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
DEFAULT_TIMEOUT = 60.0
MAX_ERROR_BODY = 4096


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    def redirect_request(  # noqa: PLR0917 - urllib's signature
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        old, target = urlsplit(req.full_url), urlsplit(newurl)
        if new is not None and (target.scheme, target.netloc) != (old.scheme, old.netloc):
            new.remove_header("Authorization")
        return new


def ssl_context(settings: RegistrySettings) -> ssl.SSLContext:
    """System CAs plus the configured extra ones; no verification only when asked."""
    ctx = ssl.create_default_context()
    for ca in settings.ca_files:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as err:
            raise RegistryError(f"cannot load CA file {ca}: {err}") from err
    if settings.skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


@dataclass(frozen=True)
class Response:
    body: IO[bytes]
    content_type: str | None
    content_length: int | None


class Endpoint:
    """One registry host as we reach it: scheme, TLS settings, auth state."""

    def __init__(self, host: str, settings: RegistrySettings, timeout: float) -> None:
        self.host = host
        self.settings = settings
        self.timeout = timeout
        self.scheme = "http" if settings.insecure else "https"
        handlers: list[Any] = [urllib.request.ProxyHandler(), _RedirectHandler()]
        if self.scheme == "https":
            handlers.append(urllib.request.HTTPSHandler(context=ssl_context(settings)))
        self._opener = urllib.request.build_opener(*handlers)
        wire_host = DOCKER_HUB_ENDPOINT if host == DOCKER_HUB else host
        self.base = f"{self.scheme}://{wire_host}/v2"
        self.auth = Authenticator(
            host, settings.username, settings.password, tls_realm=self.scheme == "https"
        )

    def _open(self, url: str, headers: dict[str, str]) -> Any:
        # Our URLs are http(s) only: built from the registry host, or a realm checked in auth.
        request = urllib.request.Request(url, headers=headers)  # noqa: S310
        try:
            return self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            return err
        except (urllib.error.URLError, OSError) as err:
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            if isinstance(reason, ssl.SSLCertVerificationError):
                raise RegistryError(
                    f"{urlsplit(url).netloc}: TLS certificate not trusted "
                    f"({reason.verify_message}); add its CA to ca_files in the registry config"
                ) from err
            raise RegistryError(f"cannot reach {url}: {reason}") from err

    def _fetch_token(self, url: str, headers: dict[str, str]) -> TokenResponse:
        response = self._open(url, headers)
        with response:
            return TokenResponse(response.status, response.read(1 << 20))

    def get(self, repository: str, path: str, accept: str | None = None) -> Response:
        """GET ``/v2/<repository>/<path>``, answering auth challenges.

        Raises RegistryError (AuthError for auth) with the registry's error text.
        """
        url = f"{self.base}/{repository}/{path}"
        scope = f"repository:{repository}:pull"
        headers = {"Accept": accept} if accept else {}
        sent = self.auth.header_for(scope)
        # A cached token the registry refuses (expired early, revoked) is renewed once.
        from_cache = sent is not None
        for _ in range(4):
            if sent is not None:
                headers["Authorization"] = sent
            response = self._open(url, headers)
            if response.status == 401:
                challenge = response.headers.get("WWW-Authenticate")
                response.close()
                if from_cache:
                    self.auth.forget(scope)
                    sent, from_cache = None, False
                sent = self.auth.answer(challenge, scope, sent, self._fetch_token)
                continue
            if response.status == 200:
                length = response.headers.get("Content-Length")
                return Response(
                    response,
                    response.headers.get("Content-Type"),
                    int(length) if length and length.isdigit() else None,
                )
            with response:
                detail = _error_detail(response.read(MAX_ERROR_BODY))
            if response.status == 403:
                raise AuthError(f"{url}: access denied (HTTP 403){detail}")
            raise RegistryError(f"{url}: HTTP {response.status}{detail}")
        raise AuthError(f"{url}: still unauthorized after answering the challenge")


def _error_detail(body: bytes) -> str:
    try:
        doc = json.loads(body)
        errors = doc.get("errors") if isinstance(doc, dict) else None
        if isinstance(errors, list) and errors:
            parts = [f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict)]
            return " (" + "; ".join(parts) + ")"
    except (UnicodeDecodeError, json.JSONDecodeError):
        pass
    text = body.decode("utf-8", "replace").strip()
    return f" ({text[:200]})" if text else ""


class RegistrySource(Protocol):
    """What the puller needs from a registry: the seam tests replace."""

    def manifest(self, repository: str, digest: Digest) -> Response: ...

    def blob(self, repository: str, digest: Digest) -> Response: ...


class RegistryClient:
    """Fetches manifests and blobs of one registry, trying its mirror first if configured."""

    def __init__(self, registry: str, config: PullerConfig, timeout: float = DEFAULT_TIMEOUT):
        settings = config.for_registry(registry)
        self.registry = registry
        self.endpoints: list[Endpoint] = []
        if settings.mirror:
            self.endpoints.append(
                Endpoint(settings.mirror, config.for_registry(settings.mirror), timeout)
            )
        self.endpoints.append(Endpoint(registry, settings, timeout))

    def _get(self, repository: str, path: str, accept: str | None) -> Response:
        last: RegistryError | None = None
        for endpoint in self.endpoints:
            try:
                return endpoint.get(repository, path, accept)
            except RegistryError as err:
                if endpoint is not self.endpoints[-1]:
                    log.warning("mirror %s failed, trying the next: %s", endpoint.host, err)
                last = err
        assert last is not None
        raise last

    def manifest(self, repository: str, digest: Digest) -> Response:
        """Open the manifest or index ``digest``. Raises RegistryError."""
        return self._get(repository, f"manifests/{digest}", mf.ACCEPT)

    def blob(self, repository: str, digest: Digest) -> Response:
        """Open the blob ``digest`` (config or layer). Raises RegistryError."""
        return self._get(repository, f"blobs/{digest}", None)
