"""Pool workers end with the process that started them, even when it is killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARENT = '''
import os
import sys
import time
from multiprocessing import get_context

from taskonomy.datamodules.worker_pool import worker_pool

if __name__ == "__main__":
    pool = worker_pool(1, get_context(sys.argv[1]))
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 120)  # the worker is busy when its parent dies
    time.sleep(120)
'''


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has exited (no init may reap it in a container)


@pytest.mark.parametrize("method", ["spawn", "fork", "forkserver"])
def test_workers_exit_when_their_parent_is_killed(tmp_path: Path, method: str) -> None:
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    # stderr: its resource tracker reports the semaphores the killed parent left; expected.
    parent = subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert _running(worker)
        os.kill(parent.pid, signal.SIGKILL)  # and left a zombie: nothing reaps it meanwhile
        deadline = time.monotonic() + 30
        while _running(worker) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _running(worker)
    finally:
        parent.kill()
        parent.wait()
