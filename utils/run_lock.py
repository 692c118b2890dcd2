"""One writer per run folder: ``run_dir/.lock`` names the process that trains into the folder.

The lock file holds ``{"pid", "host", "started", "boot"}`` (``started``: the process's start time in clock ticks
after boot from ``/proc/<pid>/stat`` where there is one, so a PID reused by another program is not mistaken for
the holder). A second process on the same folder stops with :class:`RunLockedError` naming the holder. A lock of a
process that no longer runs on this host (killed, crashed, machine rebooted) is taken over with a warning; a lock of
another host is never taken over (that host may still write): remove the file if you know that run has ended.
The same process may take its own lock again (a resume inside one Python session).
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
_HELD: dict[str, Path] = {}


class RunLockedError(ValueError):
    """Another live process holds the run folder's lock (a ValueError: the CLI prints it as one line)."""


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(")") + 2:].split()[19])
    except (ValueError, IndexError):
        return None


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int, started: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if started is not None:
        now = _start_ticks(pid)
        if now is not None and now != started:
            return False  # the PID was reused by a later process
    return True


def _describe(info: dict) -> str:
    return f"PID {info.get('pid')} on host {info.get('host')!r}"


def acquire(run_dir: str | os.PathLike) -> Path:
    """Takes ``run_dir/.lock`` for this process (released at exit or by :func:`release`); returns its path.

    Raises:
        RunLockedError: a live process (of this host, or any process of another host) holds the lock.
    """
    path = Path(run_dir) / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_ticks(os.getpid()), "boot": _boot_id()}
    text = json.dumps(me)
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(path.read_text() or "{}")
                if not isinstance(holder, dict):
                    raise ValueError("not an object")
            except (OSError, ValueError) as err:
                log.warning("run folder lock %s is unreadable (%s): taking it over", path, err)
                path.unlink(missing_ok=True)
                continue
            same_host = holder.get("host") == me["host"]
            if same_host and holder.get("pid") == me["pid"] and holder.get("started") == me["started"]:
                _HELD[str(path)] = path
                return path  # this process already holds it
            rebooted = same_host and holder.get("boot") and holder.get("boot") != me["boot"]
            if same_host and (rebooted or not _alive(int(holder.get("pid", -1)), holder.get("started"))):
                log.warning("run folder %s was locked by %s, which is no longer running: taking the lock over",
                            run_dir, _describe(holder))
                path.unlink(missing_ok=True)
                continue
            where = "" if same_host else (" (another host: its liveness cannot be checked from here; delete the "
                                          f"lock file if that run has ended)")
            raise RunLockedError(f"run folder {str(run_dir)!r} is in use by {_describe(holder)}{where}; one process "
                                 f"writes a run folder at a time (lock file {path})")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        _HELD[str(path)] = path
        return path
    raise RunLockedError(f"could not take the lock {path} (other processes keep taking it)")


def release(run_dir: str | os.PathLike) -> None:
    """Removes this process's lock of ``run_dir`` (nothing if it holds none)."""
    path = Path(run_dir) / LOCK_NAME
    if _HELD.pop(str(path), None) is None:
        return
    try:
        holder = json.loads(path.read_text())
        if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            path.unlink()
    except (OSError, ValueError):
        pass


@atexit.register
def _release_all() -> None:
    for key in list(_HELD):
        release(Path(key).parent)
