"""Starting child processes that die with their parent and log to a file."""

from __future__ import annotations

import ctypes
import os
import pwd
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child after setuid (which would have cleared it), before exec.
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig)

    return preexec


@dataclass(frozen=True)
class Identity:
    """Who a child runs as: system user `name` with only its own group, or (None) as we do."""

    uid: int | None = None
    gid: int | None = None
    extra_groups: list[int] | None = None

    @classmethod
    def of(cls, name: str | None) -> Identity:
        if name is None:
            return cls()
        entry = pwd.getpwnam(name)
        return cls(entry.pw_uid, entry.pw_gid, [])


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log_file: Path,
    env: Mapping[str, str] | None = None,
    run_as: str | None = None,
    death_signal: int = signal.SIGTERM,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session (so a terminal's Ctrl-C reaches only the supervisor), output to
    `log_file`, and killed with `death_signal` if this process dies without stopping it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        who = Identity.of(run_as)
        return subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            pass_fds=pass_fds,
            preexec_fn=_die_with_parent(death_signal),
            user=who.uid,
            group=who.gid,
            extra_groups=who.extra_groups,
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
