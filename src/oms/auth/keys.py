"""The auth service's signing key: Ed25519, created on first start and kept in the data folder."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from oms.kernel.secret_file import read_or_create
from oms.kernel.tokens import ALGORITHM


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class SigningKey:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        raw = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        public = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
        # RFC 7638 thumbprint: the same key always gets the same id, on every replica.
        self.kid = _b64url(hashlib.sha256(json.dumps(public, separators=(",", ":")).encode()).digest())
        self.public_jwk = {**public, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}

    @property
    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def sign(self, claims: dict[str, object]) -> str:
        return jwt.encode(claims, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """Load the key at `path`, creating it first if there is none (replicas starting together agree)."""
        pem = read_or_create(path, _new_pem)
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return cls(key)


def _new_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
