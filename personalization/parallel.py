"""Run one job in a forked second process while this one works (the guard's final fits beside its split).

The guard fits four models: the personal model and a BT on a split of the users, then both on all pairs.
The final two do not depend on the split's outcome, so on a CPU with two or more cores they are fitted
in a forked process while this one fits the split and searches. Each fit runs on one thread
(``FitConfig.cpu_threads``: small kernels lose to thread-pool barriers), so the two do not compete.
Results do not depend on it: every fit seeds its own generators, so a fit gives the same model in either
process.

Falls back to running the job in this process where forking is not safe or not useful: CUDA (a forked
child cannot use the parent's CUDA context), fewer than two usable cores, no ``fork`` start method, a
process with other threads running, or a child that fails for any reason (the job is then run here).
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import threading
import traceback
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import torch

T = TypeVar("T")
log = logging.getLogger(__name__)


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one, as in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def can_fork(device: torch.device) -> bool:
    """Fork only a single-threaded process: a thread holding a lock (logging, malloc) at the fork would
    leave it held forever in the child. Celery's prefork workers and the CLI are single-threaded (tqdm's
    monitor aside: the child draws no progress bars); a fit run inside a threaded web server (the demo's
    in-process tasks) stays in-process."""
    return (device.type == "cpu" and usable_cores() >= 2
            and "fork" in multiprocessing.get_all_start_methods()
            and all(t is threading.main_thread() or t.name == "tqdm_monitor" for t in threading.enumerate())
            and not torch.cuda.is_initialized())


def _child(conn: Any, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    # The child got fn and args by fork (nothing pickled on the way in); the result goes back as one
    # torch.save blob rather than through torch's shared-memory tensor passing, whose file descriptors
    # would outlive this short process.
    try:
        torch.set_num_threads(1)
        buf = io.BytesIO()
        torch.save(fn(*args), buf)
        conn.send_bytes(b"ok" + buf.getvalue())
    except BaseException:  # noqa: BLE001 - report anything; the parent then fits here
        conn.send_bytes(b"er" + traceback.format_exc().encode())
    finally:
        conn.close()


class Beside(Generic[T]):
    """``fn(*args)`` started in a forked process (or deferred, when ``enabled`` is false or the fork
    fails); ``result()`` waits for it, and runs it here if the child failed."""

    def __init__(self, fn: Callable[..., T], *args: Any, enabled: bool = True):
        self.fn, self.args = fn, args
        self.proc: Any = None
        self.conn: Any = None
        if enabled:
            try:
                ctx = multiprocessing.get_context("fork")
                self.conn, child_conn = ctx.Pipe(duplex=False)
                self.proc = ctx.Process(target=_child, args=(child_conn, fn, args), daemon=True)
                self.proc.start()
                child_conn.close()
            except Exception:  # noqa: BLE001 - any failure to start means: run it here instead
                log.exception("could not start a second fit process; fitting in this one")
                self._close()

    @property
    def forked(self) -> bool:
        return self.proc is not None

    def result(self) -> T:
        try:
            if self.proc is not None:
                try:
                    blob = self.conn.recv_bytes()
                except EOFError:  # the child died without a word (e.g. killed for memory)
                    blob = b"er" + f"exit code {self.proc.exitcode}".encode()
                if blob[:2] == b"ok":
                    return torch.load(io.BytesIO(blob[2:]), weights_only=False)
                log.error("the second fit process failed; fitting in this one:\n%s", blob[2:].decode(errors="replace"))
            return self.fn(*self.args)
        finally:
            self._close()

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        if self.proc is not None:
            self.proc.join(timeout=30)
            if self.proc.is_alive():
                self.proc.kill()
        self.proc, self.conn = None, None
