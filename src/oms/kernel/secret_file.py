"""Secrets kept in files of the data folder: created once, 0600 in a 0700 folder, never half-written."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Callable
from pathlib import Path


def new_password() -> str:
    """A random password: 24 bytes as URL-safe text."""
    return secrets.token_urlsafe(24)


def read_or_create_text(path: Path, make: Callable[[], str] = new_password) -> str:
    """`read_or_create` for a secret that is text (a password)."""
    return read_or_create(path, lambda: make().encode()).decode()


def random_key() -> bytes:
    """32 random bytes as URL-safe text: a key for HMACs and shared secrets."""
    return secrets.token_urlsafe(32).encode()


def read_or_create(path: Path, make: Callable[[], bytes] = random_key) -> bytes:
    """The secret in `path`, created with `make()` first if there is none. Replicas starting together agree:
    the first to link its file wins and the others read that one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
        with os.fdopen(fd, "wb") as file:
            file.write(make())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another replica won; use its secret
        finally:
            os.unlink(temporary)
    return path.read_bytes().strip()
