"""Free-port checks that name the setting to change, so a start never half-succeeds."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
from pathlib import Path
from typing import Final

from oms.kernel.settings import Settings


class PortUnavailable(RuntimeError):
    """A port the system needs cannot be bound."""


def check_bindable(host: str, port: int, what: str, setting: str) -> None:
    """Raise PortUnavailable (one line, naming `setting`) if `host:port` cannot be bound right now."""
    bound(host, port, what, setting).close()


def bound(host: str, port: int, what: str, setting: str, *, shared: bool = False) -> socket.socket:
    """A socket bound to `host:port`, not yet listening (PortUnavailable, naming `setting`, if it cannot be
    bound). `shared`: with SO_REUSEPORT, so that the replicas of a service on this host bind the same port
    and the kernel spreads the connections among those listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = {
            errno.EACCES: "permission denied (ports below 1024 need root)",
            errno.EADDRINUSE: "already in use" + (" by a process that does not share it" if shared else ""),
        }.get(exc.errno or 0, exc.strerror or str(exc))
        message = f"cannot bind port {port} for {what} on {host}: {reason}"
        raise PortUnavailable(f"{message}; choose another with {setting}=<port>") from None
    return sock


# Ports for servers are picked below the kernel's range for outgoing connections (ip_local_port_range,
# 32768 on by default): a port picked there can be taken as the local port of some connection before the
# server binds it (seen in CI: a relay's metrics port, taken while the system was starting).
_PICK_FROM: Final = 20_000
_EPHEMERAL_RANGE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
FREE_PORTS_VARIABLE: Final = "OMS_FREE_PORTS"


# Ports this process has handed out: free until their server binds them, so another pick must not get one
# (two settings of one `free_port_env` were once given the same port: auth's and market's).
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free at this moment (for tests and temporary servers), outside the ephemeral range,
    and never one this process handed out before."""
    low, high = _pick_range()
    if high - low >= 100:
        start = random.randrange(low, high)  # noqa: S311 (spreads concurrent picks; not a secret)
        for offset in range(high - low):
            port = low + (start - low + offset) % (high - low)
            if port in _handed_out:
                continue
            with contextlib.suppress(PortUnavailable):
                check_bindable(host, port, "a free port", "")
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        picked: int = sock.getsockname()[1]
        return picked


def _pick_range() -> tuple[int, int]:
    """Where ports are picked: `OMS_FREE_PORTS` ("low-high", high excluded) when set — processes that pick
    at the same time on one machine (parallel test workers) each get their own range, since a port one has
    picked is free until its server binds it — else from `_PICK_FROM` to the ephemeral range."""
    if chosen := os.environ.get(FREE_PORTS_VARIABLE):
        low, _, high = chosen.partition("-")
        return int(low), int(high)
    return _PICK_FROM, _ephemeral_low()


def split_pick_range(part: int, parts: int) -> str:
    """The `OMS_FREE_PORTS` value of the `part`-th (from 0) of `parts` processes picking at once."""
    low, high = _PICK_FROM, _ephemeral_low()
    size = (high - low) // parts
    return f"{low + part * size}-{low + (part + 1) * size}"


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port_env() -> dict[str, str]:
    """`OMS_<NAME>_PORT` for every port setting there is, each a port free now: a whole system on this
    machine that collides with no other (tests, benchmarks). Ports that are off unless set stay off."""
    fields = Settings.model_fields
    names = [name for name in fields if name.endswith("_port") and fields[name].default is not None]
    return {f"OMS_{name.upper()}": str(free_port()) for name in names}
