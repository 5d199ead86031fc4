"""Ending the servers a test started in a session of their own (`start_new_session=True`):
every live process of that session, with SIGKILL, at once. A test's Ray head holds nothing
worth a graceful stop, and `ray start --block` and its raylet outlast a SIGTERM by many
seconds (test_serve_cli.py's head waited out its 30 s, then was killed all the same). Never
`ray stop`: it stops every Ray cluster of the user on this machine, other test runs' too."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def session_pids(sid: int) -> list[int]:
    """Live processes of session `sid` (zombies are dead already: skipped). Ray's workers
    change process group, not session, so the session finds them all."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) != sid:
                    continue
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):  # gone meanwhile
                continue
            if state != "Z":
                pids.append(int(entry.name))
    return pids


def end_session(leader: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGKILL every process of the session `leader` started, then wait until none is left."""
    deadline = time.monotonic() + timeout_s
    while (pids := session_pids(leader.pid)) and time.monotonic() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        leader.poll()  # reap the leader so it leaves the table
        time.sleep(0.1)
    leader.wait(5)
