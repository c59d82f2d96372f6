"""Free-port checks that name the setting to change, so a start never half-succeeds."""

from __future__ import annotations

import errno
import socket

from oms.kernel.settings import Settings


class PortUnavailable(RuntimeError):
    """A port the system needs cannot be bound."""


def check_bindable(host: str, port: int, what: str, setting: str) -> None:
    """Raise PortUnavailable (one line, naming `setting`) if `host:port` cannot be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            reason = {
                errno.EACCES: "permission denied (ports below 1024 need root)",
                errno.EADDRINUSE: "already in use",
            }.get(exc.errno or 0, exc.strerror or str(exc))
            message = f"cannot bind port {port} for {what} on {host}: {reason}"
            raise PortUnavailable(f"{message}; choose another with {setting}=<port>") from None


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
