"""TLS with a CA the test makes, htpasswd Basic auth and Bearer token auth.

docker-registry 2.8 answers htpasswd auth with a Basic challenge; for Bearer it needs
an external token server, which ``TokenServer`` is (ES256 JWTs with the signing
certificate in x5c, trusted by the registry through rootcertbundle).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit import ocibuild as ob
from devkit.registry import (
    Pki,
    Registry,
    TokenServer,
    make_pki,
    registry_settings_toml,
)
from guest.imagepull import config
from guest.imagepull.errors import AuthError, RegistryError
from guest.imagepull.puller import ImagePuller
from guest.imagepull.store import LayerStore
from tests.conftest import require_programs
from tests.integration.imagepull.conftest import require_root

USERS = {"puller": "correct horse"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[ob.Image, Path]:
    img = ob.build_image(
        [
            ob.Layer(ob.layer_tar([ob.file("one", b"1")])),
            ob.Layer(ob.layer_tar([ob.file("two", b"2")]), "zstd"),
        ]
    )
    return img, ob.write_layout(img, tmp_path_factory.mktemp("layout"), "v1")


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Registry]:
    require_root()
    require_programs("docker-registry", "skopeo", "htpasswd")
    with Registry(tmp_path_factory.mktemp("basic"), pki=pki, htpasswd=USERS) as reg:
        yield reg


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[TokenServer]:
    with TokenServer(tmp_path_factory.mktemp("token"), pki, USERS) as server:
        yield server


@pytest.fixture(scope="module")
def token_registry(
    tmp_path_factory: pytest.TempPathFactory, pki: Pki, token_server: TokenServer
) -> Iterator[Registry]:
    require_root()
    require_programs("docker-registry", "skopeo")
    with Registry(tmp_path_factory.mktemp("tokenreg"), pki=pki, token=token_server) as reg:
        yield reg


def pull(registry: Registry, digest: str, store: Path, **settings: object) -> None:
    puller = ImagePuller(
        LayerStore(store), config.parse(registry_settings_toml(registry, **settings))
    )
    pulled = puller.pull(f"{registry.host}/auth/app@{digest}")
    assert (pulled.layers[0] / "two").read_bytes() == b"2"


def test_basic_auth_over_tls(
    basic_registry: Registry, image: tuple[ob.Image, Path], tmp_path: Path
) -> None:
    img, layout = image
    digest = basic_registry.push(layout, "auth/app", "v1")
    assert digest == img.manifest_digest
    pull(basic_registry, digest, tmp_path / "ok")

    with pytest.raises(AuthError, match="credentials for user 'puller' were rejected"):
        pull(basic_registry, digest, tmp_path / "wrong", creds=("puller", "wrong"))
    with pytest.raises(AuthError, match="requires credentials"):
        pull(basic_registry, digest, tmp_path / "none", creds=None)


def test_untrusted_certificate(
    basic_registry: Registry, image: tuple[ob.Image, Path], tmp_path: Path
) -> None:
    settings = config.parse(f'[registries."{basic_registry.host}"]\n')
    puller = ImagePuller(LayerStore(tmp_path / "store"), settings)
    with pytest.raises(RegistryError, match="TLS certificate not trusted"):
        puller.pull(f"{basic_registry.host}/auth/app@{image[0].manifest_digest}")


def test_token_auth(
    token_registry: Registry,
    token_server: TokenServer,
    image: tuple[ob.Image, Path],
    tmp_path: Path,
) -> None:
    img, layout = image
    digest = token_registry.push(layout, "auth/app", "v1")
    assert digest == img.manifest_digest
    token_server.requests.clear()
    pull(token_registry, digest, tmp_path / "ok")
    # One token for the pull scope, shared by the manifest, config and parallel layers.
    assert len(token_server.requests) == 1
    assert "scope=repository%3Aauth%2Fapp%3Apull" in token_server.requests[0]

    with pytest.raises(AuthError, match=r"rejected the credentials for user 'puller' \(HTTP 401\)"):
        pull(token_registry, digest, tmp_path / "wrong", creds=("puller", "nope"))
    with pytest.raises(AuthError, match="rejected the credentials for user anonymous"):
        pull(token_registry, digest, tmp_path / "anon", creds=None)


def test_skip_verify_without_ca(
    basic_registry: Registry, image: tuple[ob.Image, Path], tmp_path: Path
) -> None:
    img, layout = image
    digest = basic_registry.push(layout, "auth/app", "v1")
    user, password = next(iter(USERS.items()))
    settings = config.parse(
        f'[registries."{basic_registry.host}"]\nskip_verify = true\n'
        f'username = "{user}"\npassword = "{password}"\n'
    )
    pulled = ImagePuller(LayerStore(tmp_path / "store"), settings).pull(
        f"{basic_registry.host}/auth/app@{digest}"
    )
    assert pulled.manifest_digest.hex == img.manifest_digest.removeprefix("sha256:")
