"""The copied upstream vectors (tests/data/initdata, see NOTICE there) and their
documented values (from the vectors' READMEs)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "data" / "initdata"


def read(name: str) -> bytes:
    return (DATA / name).read_bytes()


KATA_DEFAULT_SHA256 = "5fbba2d190b4c600dc48b80802559460ecae499f76f079e9ad2ebd4e3c7eb65f"
KATA_DEFAULT_SHA384 = (
    "78d7ed2576abb9adc5fad13937243daf83c4af7c9399eb677cb003693b0574d0"
    "b4e9c60a08a472a395fcf66905487e66"
)
KATA_DEFAULT_HOST_DATA_B64 = "X7ui0ZC0xgDcSLgIAlWUYOyuSZ928HnprS69Tjx+tl8="
TRUSTEE_SHA256 = "0deccded0d87ec44702c7330fac3eb936b68dcca5c9f6b5df1fb3480c0b525ac"
TRUSTEE_HOST_DATA_B64 = "DezN7Q2H7ERwLHMw+sPrk2to3Mpcn2td8fs0gMC1Jaw="
CAA_SHA384 = (
    "4bebff2869bcdd3e9848fd8bca681ffb9bd9e018e343aa664c960fb4834129ac"
    "5b7fed3ca94b2da609906f1e94924b17"
)
CAA_HOST_DATA_B64 = "S+v/KGm83T6YSP2Lymgf+5vZ4BjjQ6pmTJYPtINBKaw="
KATA_IMG_PAYLOAD = b"some content"
KATA_IMG_PAYLOAD_SHA256 = "290f493c44f5d63d06b374d0a5abd292fae38b92cab2fae5efefe1b0e9347f56"
