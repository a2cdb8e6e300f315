"""A real docker-registry on loopback (the demo, the image puller's tests and benchmark).

``Registry`` is a context manager: it writes a config YAML into a temp dir, starts
``docker-registry`` on 127.0.0.1:<free port> with filesystem storage there, optionally
with TLS (a CA made here), htpasswd Basic auth or token auth (``TokenServer``), and
waits until ``/v2/`` answers. ``push`` copies an OCI layout in with skopeo.
"""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from devkit import ownership
from devkit.command import run
from devkit.errors import CommandFailed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    cert: Path
    key: Path
    cert_dir: Path  # for skopeo --dest-cert-dir: ca.crt


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_pki(directory: Path) -> Pki:
    """A CA and a server certificate for 127.0.0.1, signed by it."""
    import ipaddress

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("imagepull test CA"))
        .issuer_name(_name("imagepull test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (directory / "ca.pem").write_bytes(ca.public_bytes(pem))
    (directory / "server.pem").write_bytes(cert.public_bytes(pem))
    (directory / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_dir = directory / "certs.d"
    cert_dir.mkdir(exist_ok=True)
    (cert_dir / "ca.crt").write_bytes(ca.public_bytes(pem))
    return Pki(directory / "ca.pem", directory / "server.pem", directory / "server.key", cert_dir)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A minimal distribution token server: Basic credentials in, ES256 JWT out.

    The JWT carries its signing certificate in ``x5c``; the registry trusts it through
    ``rootcertbundle``. Every requested action is granted to a valid user.
    """

    def __init__(self, directory: Path, pki: Pki, users: dict[str, str]) -> None:
        self.users = users
        self.issuer = "imagepull-test-issuer"
        self.service = "imagepull-test-registry"
        self.requests: list[str] = []
        now = datetime.datetime.now(datetime.UTC)
        self._key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name("token signer"))
            .issuer_name(_name("token signer"))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.rootcertbundle = directory / "token-signer.pem"
        self.rootcertbundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        server = self
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(pki.cert, pki.key)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = server.answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.socket = ctx.wrap_socket(self._httpd.socket, server_side=True)
        self.realm = f"https://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> TokenServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        self.requests.append(path)
        user = None
        if authorization and authorization.startswith("Basic "):
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(name) != password:
                return 401, b'{"details": "invalid credentials"}'
            user = name
        if user is None:
            return 401, b'{"details": "credentials required"}'
        query = parse_qs(urlsplit(path).query)
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": query.get("service", [self.service])[0],
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "access": access,
        }
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self._x5c]}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        token = f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
        return 200, json.dumps({"token": token, "expires_in": 300}).encode()


class Registry:
    """docker-registry on loopback; ``host`` is ``127.0.0.1:<port>``."""

    def __init__(
        self,
        directory: Path,
        *,
        pki: Pki | None = None,
        htpasswd: dict[str, str] | None = None,
        token: TokenServer | None = None,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.storage = directory / "storage"
        self.creds: tuple[str, str] | None = None
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "error", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": uuid.uuid4().hex},
        }
        if pki is not None:
            config["http"]["tls"] = {"certificate": str(pki.cert), "key": str(pki.key)}
        if htpasswd:
            path = directory / "htpasswd"
            lines = [
                run(["htpasswd", "-niB", user], stdin=password.encode()).strip()
                for user, password in htpasswd.items()
            ]
            path.write_text("\n".join(lines) + "\n")
            config["auth"] = {"htpasswd": {"realm": "imagepull-test", "path": str(path)}}
            self.creds = next(iter(htpasswd.items()))
        elif token is not None:
            config["auth"] = {
                "token": {
                    "realm": token.realm,
                    "service": token.service,
                    "issuer": token.issuer,
                    "rootcertbundle": str(token.rootcertbundle),
                }
            }
            self.creds = next(iter(token.users.items()))
        self.config_path = directory / "config.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self._proc: subprocess.Popen[bytes] | None = None
        self._log = directory / "registry.log"

    @property
    def url(self) -> str:
        return f"{'https' if self.pki else 'http'}://{self.host}"

    def __enter__(self) -> Registry:
        log = self._log.open("wb")
        ownership.claim()  # swept when its owner was killed before __exit__
        self._proc = subprocess.Popen(
            ["docker-registry", "serve", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert)) if self.pki else None
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                raise CommandFailed(f"docker-registry exited: {self._log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=ctx):  # noqa: S310
                    return self
            except urllib.error.HTTPError as err:
                if err.code == 401:
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.__exit__(None, None, None)
                raise CommandFailed(f"docker-registry did not answer: {self._log.read_text()}")
            time.sleep(0.1)

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def push(self, layout: Path, repository: str, tag: str = "latest") -> str:
        """Copy the OCI layout into ``repository:tag``; return the manifest digest."""
        digest_file = self.directory / f"digest-{uuid.uuid4().hex}"
        args = ["skopeo", "copy", "--quiet", "--digestfile", str(digest_file)]
        if self.pki is not None:
            args += ["--dest-cert-dir", str(self.pki.cert_dir)]
        else:
            args += ["--dest-tls-verify=false"]
        if self.creds is not None:
            args += ["--dest-creds", f"{self.creds[0]}:{self.creds[1]}"]
        args += [f"oci:{layout}:{tag}", f"docker://{self.host}/{repository}:{tag}"]
        run(args, timeout=600)
        return digest_file.read_text().strip()

    def upload(self, blobs: dict[str, bytes], manifest: bytes, repository: str, tag: str) -> str:
        """Push blobs and a manifest byte for byte (skopeo would recompress some layers).

        Only for registries without auth. Returns the manifest digest the registry reports.
        """
        assert self.creds is None, "upload() speaks no auth; use push()"
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert)) if self.pki else None

        def request(method: str, url: str, data: bytes | None, ctype: str) -> Any:
            req = urllib.request.Request(url, data=data, method=method)  # noqa: S310
            req.add_header("Content-Type", ctype)
            return urllib.request.urlopen(req, timeout=60, context=ctx)  # noqa: S310

        for digest, data in blobs.items():
            if data is manifest:
                continue
            with request("POST", f"{self.url}/v2/{repository}/blobs/uploads/", b"", "x") as r:
                location = r.headers["Location"]
            if location.startswith("/"):
                location = self.url + location
            sep = "&" if "?" in location else "?"
            with request(
                "PUT", f"{location}{sep}digest={digest}", data, "application/octet-stream"
            ):
                pass
        media_type = json.loads(manifest)["mediaType"]
        with request(
            "PUT", f"{self.url}/v2/{repository}/manifests/{tag}", manifest, media_type
        ) as r:
            return str(r.headers["Docker-Content-Digest"])

    def blob_data(self, digest: str) -> Path:
        """The file in the registry's storage holding blob ``digest`` (to tamper with)."""
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


def registry_settings_toml(registry: Registry, **extra: object) -> str:
    """A puller config naming ``registry``: insecure HTTP or its CA, credentials."""
    lines = [f'[registries."{registry.host}"]']
    if registry.pki is None:
        lines.append("insecure = true")
    else:
        lines.append(f'ca_files = ["{registry.pki.ca_cert}"]')
    creds = extra.pop("creds", registry.creds)
    if creds is not None:
        assert isinstance(creds, tuple)
        lines.append(f'username = "{creds[0]}"')
        lines.append(f'password = "{creds[1]}"')
    for key, value in extra.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"
