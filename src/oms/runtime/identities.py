"""The broker identities of a data folder: one NATS nkey per component, generated once and kept in
`<data-dir>/secrets/nats/<identity>.nk` (folder 0700, files 0600), and the NATS server's authorization built
from their public keys and `kernel/permissions.py` (docs/decisions/009).

The server's configuration holds public keys only; a component proves it holds its seed by signing the
server's nonce, so no secret crosses the connection.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nkeys

from oms.kernel.nats_access import NKEY
from oms.kernel.permissions import IDENTITIES, PERMISSIONS, Permissions


class IdentityError(RuntimeError):
    """A kept identity cannot be read: its file is not an nkey seed."""


def seed_file(folder: Path, identity: str) -> Path:
    """Where `identity`'s nkey seed is kept in identities folder `folder`."""
    return folder / f"{identity}{NKEY}"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _new_seed(path: Path) -> None:
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    # O_EXCL: two `oms up` racing for a fresh folder cannot end up with two different seeds half-written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(seed + b"\n")


def public_key(path: Path) -> str:
    """The public key of the seed kept in `path` (IdentityError if it is not an nkey user seed)."""
    try:
        keys = nkeys.from_seed(bytearray(path.read_bytes().strip()))
        key: bytes = keys.public_key
    except (nkeys.NkeysError, ValueError) as exc:
        raise IdentityError(f"{path} is not a NATS nkey seed ({exc}); delete it to make a new one") from None
    return key.decode()


def ensure_identities(folder: Path) -> dict[str, str]:
    """Every component's public key by identity; seeds missing from `folder` (and its parent, the secrets
    folder) are generated."""
    _private_dir(folder.parent)
    _private_dir(folder)
    keys = {}
    for identity in IDENTITIES:
        path = seed_file(folder, identity)
        if not path.exists():
            _new_seed(path)
        path.chmod(0o600)
        keys[identity] = public_key(path)
    return keys


def _rules(allowed: tuple[str, ...] | None) -> dict[str, list[str]]:
    return {} if allowed is None else {"allow": list(allowed)}


def _user(key: str, permissions: Permissions) -> dict[str, object]:
    rules = {"publish": _rules(permissions.publish), "subscribe": _rules(permissions.subscribe)}
    return {"nkey": key, "permissions": {kind: rule for kind, rule in rules.items() if rule}}


def authorization(public_keys: dict[str, str]) -> str:
    """The `authorization` block of nats.conf: each public key with its identity's permissions; nobody
    else (no anonymous user) may connect."""
    users = [_user(public_keys[identity], PERMISSIONS[identity]) for identity in IDENTITIES]
    return f"authorization: {json.dumps({'users': users}, indent=2)}"
