"""Secrets kept in files of the data folder's `secrets/`: made on first use, readable by their owner only."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def new_password() -> str:
    return secrets.token_urlsafe(24)


def read_or_create(path: Path, make: Callable[[], str] = new_password) -> str:
    """The secret in `path`; on first use `make()`'s, written to a 0600 file in a 0700 folder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.parent.chmod(0o700)
    try:
        # Created with its final mode: never readable by others, not even for a moment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(make() + "\n")
    return path.read_text().strip()
