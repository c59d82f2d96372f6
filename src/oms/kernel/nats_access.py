"""How a component reaches the broker: the servers, its own identity and credentials, TLS. Every NATS
connection of the system is made by `connect_nats` (docs/decisions/009).

Credentials come from the `OMS_NATS_*` settings when given (a `.creds` file, an nkey seed file, or a user
and its password), otherwise from the identity's file in the identities folder
(`<data-dir>/secrets/nats/<identity>.creds|.nk|.password`, where `oms up` keeps the ones it generated).
There is no anonymous fallback: without credentials a component stops with an error that says what to set.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient

from oms.kernel.permissions import inbox_prefix
from oms.kernel.settings import Settings

log = logging.getLogger(__name__)

# An identity's file in the identities folder, by kind: a JWT .creds file, an nkey seed, or a password (the
# user then being the identity's name).
CREDS, NKEY, PASSWORD = ".creds", ".nk", ".password"


class NatsConfigError(RuntimeError):
    """The broker credentials are missing or contradictory; the message says what to set."""


@dataclass(frozen=True)
class NatsAccess:
    """One identity's way into the broker."""

    servers: tuple[str, ...]
    identity: str
    creds_file: Path | None = None
    nkey_file: Path | None = None
    user: str | None = None
    password_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.identity)

    def env(self) -> dict[str, str]:
        """The `OMS_NATS_*` variables that hand this identity to a child process."""
        fields = {
            "OMS_NATS_URL": ",".join(self.servers),
            "OMS_NATS_CREDS_FILE": self.creds_file,
            "OMS_NATS_NKEY_FILE": self.nkey_file,
            "OMS_NATS_USER": self.user,
            "OMS_NATS_PASSWORD_FILE": self.password_file,
            "OMS_NATS_TLS_CA_FILE": self.tls_ca_file,
            "OMS_NATS_TLS_CERT_FILE": self.tls_cert_file,
            "OMS_NATS_TLS_KEY_FILE": self.tls_key_file,
        }
        return {name: str(value) for name, value in fields.items() if value is not None}

    def with_servers(self, url: str) -> NatsAccess:
        return NatsAccess(**{**self.__dict__, "servers": split_servers(url)})


def split_servers(url: str) -> tuple[str, ...]:
    return tuple(u.strip() for u in url.split(",") if u.strip())


def identities_dir(settings: Settings) -> Path:
    """Where identities are looked up (and where `oms up` keeps the ones it generates)."""
    return settings.nats_identities_dir or settings.secrets_dir / "nats"


def _explicit(settings: Settings) -> dict[str, Any]:
    given = {
        "creds_file": settings.nats_creds_file,
        "nkey_file": settings.nats_nkey_file,
        "user": settings.nats_user,
    }
    chosen = {k: v for k, v in given.items() if v is not None}
    if len(chosen) > 1:
        names = ", ".join(f"OMS_NATS_{k.upper()}" for k in chosen)
        raise NatsConfigError(f"give one kind of NATS credentials, not {names}")
    if "user" in chosen:
        if settings.nats_password_file is None:
            raise NatsConfigError(
                "OMS_NATS_USER needs OMS_NATS_PASSWORD_FILE (the file holding its password)"
            )
        chosen["password_file"] = settings.nats_password_file
    return chosen


def _kept(folder: Path, identity: str) -> dict[str, Any]:
    for suffix, kind in ((CREDS, "creds_file"), (NKEY, "nkey_file")):
        if (folder / f"{identity}{suffix}").is_file():
            return {kind: folder / f"{identity}{suffix}"}
    if (folder / f"{identity}{PASSWORD}").is_file():
        return {"user": identity, "password_file": folder / f"{identity}{PASSWORD}"}
    return {}


def access_for(settings: Settings, identity: str) -> NatsAccess:
    """This process's access to the broker at OMS_NATS_URL as `identity`: the OMS_NATS_* credentials, or
    else the identity's file in the identities folder (NatsConfigError when there is neither)."""
    return _access(settings, identity, _explicit(settings) or _kept(identities_dir(settings), identity))


def kept_access(settings: Settings, identity: str) -> NatsAccess:
    """`identity`'s access from its file in the identities folder alone (what `oms up` hands a child)."""
    return _access(settings, identity, _kept(identities_dir(settings), identity))


def _access(settings: Settings, identity: str, credentials: dict[str, Any]) -> NatsAccess:
    if not credentials:
        raise NatsConfigError(
            f"no NATS credentials for {identity}: set OMS_NATS_CREDS_FILE, OMS_NATS_NKEY_FILE or"
            f" OMS_NATS_USER + OMS_NATS_PASSWORD_FILE, or put {identity}.creds|.nk|.password in"
            f" {identities_dir(settings)}"
        )
    return NatsAccess(
        servers=split_servers(settings.nats_url),
        identity=identity,
        tls_ca_file=settings.nats_tls_ca_file,
        tls_cert_file=settings.nats_tls_cert_file,
        tls_key_file=settings.nats_tls_key_file,
        **credentials,
    )


def _tls(access: NatsAccess) -> ssl.SSLContext | None:
    if access.tls_ca_file is None and access.tls_cert_file is None:
        return None
    context = ssl.create_default_context(
        cafile=str(access.tls_ca_file) if access.tls_ca_file is not None else None
    )
    if access.tls_cert_file is not None:
        context.load_cert_chain(str(access.tls_cert_file), access.tls_key_file and str(access.tls_key_file))
    return context


def _credentials(access: NatsAccess) -> dict[str, Any]:
    if access.creds_file is not None:
        return {"user_credentials": str(access.creds_file)}
    if access.nkey_file is not None:
        return {"nkeys_seed": str(access.nkey_file)}
    if access.user is not None and access.password_file is not None:
        return {"user": access.user, "password": access.password_file.read_text().strip()}
    raise NatsConfigError(f"no NATS credentials for {access.identity}")


async def _log_error(exc: Exception) -> None:
    log.warning("NATS connection: %s", exc)


async def connect_nats(
    access: NatsAccess,
    *,
    name: str | None = None,
    once: bool = False,
    error_cb: Any = None,
) -> NatsClient:
    """A connection as `access.identity`, replies under its own inbox prefix. It reconnects for ever (a
    publisher retries through an outage), or with `once` fails at once, with the reason, when no server
    answers (command-line tools: ConnectionError)."""
    options: dict[str, Any] = {
        "servers": list(access.servers),
        "name": name or f"oms-{access.identity}",
        "inbox_prefix": access.inbox_prefix,
        "tls": _tls(access),
        "connect_timeout": 2,
        "reconnect_time_wait": 0.5,
        **_credentials(access),
    }
    if not once:
        return await nats.connect(
            **options, allow_reconnect=True, max_reconnect_attempts=-1, error_cb=error_cb or _log_error
        )
    failures: list[Exception] = []

    async def remember(exc: Exception) -> None:  # raised below: a log line would say it twice
        failures.append(exc)
        if error_cb is not None:
            await error_cb(exc)

    # Quick, and a limit on attempts: nats-py's first connect otherwise tries a refused server for ever.
    options.update(connect_timeout=1, reconnect_time_wait=0.1, max_reconnect_attempts=1)
    try:
        return await nats.connect(**options, allow_reconnect=False, error_cb=remember)
    except (nats.errors.NoServersError, OSError, TimeoutError) as exc:
        last = failures[-1] if failures else exc
        reason = str(last) or (
            "no answer within 1s" if isinstance(last, TimeoutError) else type(last).__name__
        )
        raise ConnectionError(f"cannot reach NATS at {', '.join(access.servers)}: {reason}") from None
