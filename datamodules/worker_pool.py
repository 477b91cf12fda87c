"""Worker processes that do not outlive the process that started them."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from pathlib import Path

#: Seconds between a worker's checks that its parent is alive.
PARENT_POLL_S = 1.0


def _alive(pid: int) -> bool:
    """Whether a process runs: a killed one may stay a zombie until its parent reaps it."""
    if Path("/proc/self/stat").is_file():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]
    try:  # no /proc: ask the kernel (a zombie then counts as alive until it is reaped)
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, under another user
        return True
    return True


def _exit_with_parent(caller: int) -> None:
    """Pool initializer: end this worker once the process that started the pool is gone.

    A parent killed with SIGKILL cannot stop its pool, and the workers, which hold both ends
    of the task queue's pipe, would wait on it forever after their current job. A worker's
    parent is the caller (fork, spawn) or a fork server that outlives it (forkserver), so the
    caller is watched too.
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent and _alive(caller):
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def worker_pool(max_workers: int, mp_context: BaseContext | None = None) -> ProcessPoolExecutor:
    """A process pool whose workers exit when the calling process dies, even by SIGKILL.

    Args:
        max_workers: Worker processes.
        mp_context: The multiprocessing context (default: the platform's).
    """
    return ProcessPoolExecutor(max_workers=max_workers, mp_context=mp_context,
                               initializer=_exit_with_parent, initargs=(os.getpid(),))
