"""Free-port checks that name the setting to change, so a start never half-succeeds."""

from __future__ import annotations

import errno
import socket

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


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free at this moment (for tests and temporary servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_port_env() -> dict[str, str]:
    """`OMS_<NAME>_PORT` for every port setting there is, each a port free now: a whole system on this
    machine that collides with no other (tests, benchmarks). Ports that are off unless set stay off."""
    fields = Settings.model_fields
    names = [name for name in fields if name.endswith("_port") and fields[name].default is not None]
    return {f"OMS_{name.upper()}": str(free_port()) for name in names}
