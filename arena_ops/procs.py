"""Processes by session: what `arena` starts in the background (a local Ray head, the components of `arena stack`)
runs in a session of its own, which every descendant inherits unless it starts its own — Ray's daemons and workers,
Serve replicas, Airflow's task processes do not. Stopping a session stops exactly what was started, never another
Ray cluster or Airflow on the same machine (``ray stop`` would stop them all)."""

from __future__ import annotations

import contextlib
import os
import signal
import time

import psutil


def session_members(sessions: set[int]) -> list[int]:
    """Live (non-zombie) processes in any of ``sessions``, this process excluded."""
    out = []
    for pid in psutil.pids():
        if pid == os.getpid():
            continue
        try:
            if os.getsid(pid) in sessions and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except (OSError, psutil.Error):
            continue
    return out


def stop_sessions(sessions: set[int], grace_s: float = 30.0) -> list[int]:
    """SIGTERM every process of ``sessions``, SIGKILL what is left after ``grace_s``; returns the pids still alive
    (none unless the kernel refused)."""
    for pid in session_members(sessions):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while session_members(sessions) and time.monotonic() < deadline:
        time.sleep(0.3)
    for pid in session_members(sessions):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while session_members(sessions) and time.monotonic() < deadline:
        time.sleep(0.2)
    return session_members(sessions)


def carries(pid: int, key: str, value: str) -> bool:
    """Whether the process, or one of its ancestors, has ``key=value`` in its environment. Ancestors count because
    a process title set with setproctitle (Ray's workers, Serve replicas, Airflow's processes) may overwrite what
    ``/proc/<pid>/environ`` shows; a raylet or a session leader above them still shows it."""
    try:
        chain = [psutil.Process(pid)]
        chain += chain[0].parents()
    except psutil.Error:
        return False
    for p in chain:
        try:
            if p.environ().get(key) == value:
                return True
        except (psutil.Error, OSError):
            continue
    return False
