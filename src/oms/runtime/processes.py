"""Starting child processes that die with their parent and log to a file."""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child after setuid (which would have cleared it), before exec.
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)

    return preexec


def as_user(name: str) -> dict[str, object]:
    """Popen keyword arguments that run a child as system user `name` with only its own group."""
    entry = pwd.getpwnam(name)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    run_as: str | None = None,
    death_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (so a terminal's Ctrl-C reaches only the supervisor), output to
    `log_file`, and killed with `death_signal` if this process dies without stopping it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        user = as_user(run_as) if run_as is not None else {}
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            preexec_fn=_die_with_parent(death_signal),
            **user,
        )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    """Ask `proc` to stop with `sig`; kill it if it has not exited after `timeout` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""
