"""Frames drawn in forked worker processes, yielded in order.

A depth frame's edge work is hundreds of numpy and OpenCV calls on arrays of tens of thousands
of edge pixels, and holds the GIL about a quarter of the time: two threads drawing frames
beside x264 cost 25-30 % more CPU than one, two processes 4 % (bench/RESULTS.md, sessions 17
and 18). So on Linux the frames are drawn by `workers` children forked from the process that
holds the renderer (its textures, layers and hidden background shared copy-on-write, nothing
pickled), each drawing every workers-th frame into slots of one anonymous shared mapping and
saying so over a pipe; the parent copies each frame out, in order, and frees its slot.

A worker is only ever a fork of this process: it draws, writes to its slots and exits
(`os._exit`, no clean-up of the parent's state). Anything that goes wrong in one (an error, a
worker killed, one that does not answer within WORKER_TIMEOUT_S, a fork refused) stops them
all and the frames still to come are drawn here, so a clip is never lost to the workers.
`D2V_RENDER_FORK=0` draws in this process always.
"""

from __future__ import annotations

import logging
import mmap
import os
import signal
import sys
import threading
from typing import Callable, Iterator, Sequence

import numpy as np

from d2v.encode import I420, encoder_owns_cores

log = logging.getLogger(__name__)

WORKER_TIMEOUT_S = 20.0  # longest wait for a worker's next frame before drawing here instead
SLOTS = 3  # frames each worker may have drawn ahead of the consumer
_forking = threading.Lock()


def available() -> bool:
    """Whether frames may be drawn in forked workers here (Linux, and not turned off)."""
    return sys.platform.startswith("linux") and hasattr(os, "fork") and os.environ.get("D2V_RENDER_FORK", "1") != "0"


def forked_frames(draw: Callable[[int], np.ndarray | I420], order: Sequence[int], workers: int,
                  frame_bytes: int) -> Iterator[np.ndarray | I420]:
    """draw(i) for each i in order, in order, drawn by `workers` forked processes (worker k the
    k-th, k + workers-th... of order). frame_bytes: the most bytes a frame takes (an RGB
    uint8 frame, or `I420` planes). Each frame yielded is a fresh array the consumer may keep."""
    from multiprocessing.connection import Pipe

    order = list(order)
    slot_bytes = -(-frame_bytes // mmap.PAGESIZE) * mmap.PAGESIZE
    shared = mmap.mmap(-1, workers * SLOTS * slot_bytes)  # MAP_SHARED | MAP_ANONYMOUS: the children write here
    slots = np.frombuffer(shared, np.uint8).reshape(workers, SLOTS, slot_bytes)
    pids: list[int] = []
    conns = []
    done = 0
    try:
        # OpenCV's pool stopped (no thread of it lost in a fork), and one clip's workers forked
        # at a time (the path check draws its reference frames beside the clip's own).
        with encoder_owns_cores(), _forking:
            for k in range(workers):
                ours, theirs = Pipe()
                pid = os.fork()
                if pid == 0:  # the worker
                    for conn in (ours, *conns):  # (the parent's ends: a worker holds only its own)
                        conn.close()
                    _work(draw, order[k::workers], theirs, slots[k])
                theirs.close()
                pids.append(pid)
                conns.append(ours)
        for done, i in enumerate(order):
            k, n = done % workers, done // workers  # the worker's n-th frame
            frame = _receive(conns[k], i, slots[k])
            if n + SLOTS < len(order[k::workers]):
                conns[k].send(None)  # its slot is free again, for its (n + SLOTS)-th
            yield frame
        done = len(order)
    except _WorkerLost as e:
        log.warning("depth frames: %s; drawing the rest of the clip in this process", str(e))
    except OSError as e:  # a fork refused (no memory, too many processes), a pipe broken
        log.warning("depth frames: the render workers failed (%s); drawing the rest of the clip in this process",
                    str(e))
    finally:
        _stop(pids, conns)
        del slots
        try:
            shared.close()
        except BufferError:  # a view of it still held (a traceback's frame): freed with the last one
            pass
    for i in order[done:]:
        yield draw(i)


class _WorkerLost(Exception):
    """A worker that failed, died or did not answer in time."""


def _receive(conn, i: int, slots: np.ndarray) -> np.ndarray | I420:
    """Frame i from a worker: its message, then a copy of the slot it names."""
    if not conn.poll(WORKER_TIMEOUT_S):
        raise _WorkerLost(f"a render worker gave no frame {i} within {WORKER_TIMEOUT_S:.0f} s")
    try:
        message = conn.recv()
    except (EOFError, OSError):
        raise _WorkerLost(f"a render worker stopped before frame {i}") from None
    if message[0] == "error":
        raise _WorkerLost(f"a render worker failed on frame {i} ({message[1]})")
    index, slot, kind, width, height = message
    if index != i:
        raise _WorkerLost(f"a render worker sent frame {index} for frame {i}")
    if kind == "i420":
        frame = I420(width, height)
        frame.buffer.reshape(-1)[:] = slots[slot, :frame.buffer.size]
        return frame
    return slots[slot, :height * width * 3].reshape(height, width, 3).copy()


def _work(draw, mine: list[int], conn, slots: np.ndarray) -> None:
    """A worker's life: draw its frames into its slots in turn (waiting for one to be freed once
    all are full), name each over the pipe, and exit, whatever happens."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops us
        for n, i in enumerate(mine):
            frame = draw(i)
            if n >= SLOTS:
                conn.recv()  # the consumer has taken the frame this slot held (EOFError: it stopped)
            slot = n % SLOTS
            if isinstance(frame, I420):
                slots[slot, :frame.buffer.size] = frame.buffer.reshape(-1)
                conn.send((i, slot, "i420", frame.width, frame.height))
            else:
                height, width = frame.shape[:2]
                slots[slot, :frame.size] = np.ascontiguousarray(frame).reshape(-1)
                conn.send((i, slot, "rgb", width, height))
    except BaseException as e:  # noqa: BLE001 (a worker reports everything, then exits)
        code = 1
        try:
            conn.send(("error", f"{type(e).__name__}: {e}"))
        except BaseException:  # noqa: BLE001 (the parent is gone)
            pass
    finally:
        os._exit(code)


def _stop(pids: list[int], conns) -> None:
    """Close the pipes (a worker waiting for a slot then exits), stop any worker still drawing,
    and reap them all: no process outlives the clip."""
    for conn in conns:
        conn.close()
    for pid in pids:
        try:
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        except (ChildProcessError, ProcessLookupError):  # reaped already (SIGCHLD ignored)
            pass
