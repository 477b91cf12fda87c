"""Start sweep points from a process that has already imported the suite.

The local executor runs every point as a process of its own, so a crash, a leak or a stuck
dataloader stays in that point. A fresh ``python -m taskonomy.experiments.cli`` spends about
4 s importing torch, Lightning, torchmetrics and W&B before it reads its first argument, which
is a third of a short CPU transfer. A *warm starter* pays for the imports once: it is a small
server process that imports the suite and then forks one child per point. Each child leaves
the server's session, takes the point's environment, working folder and log file, and runs the
command line as ``python -m taskonomy.experiments.cli`` would, exit status included.

Forking is only safe while the server has not touched CUDA (a CUDA context does not survive a
fork), and the server never runs a tensor operation, so no math thread pool exists yet either.
The executor uses warm starts where no GPU is visible and fresh processes elsewhere; on a GPU
box each point runs for minutes, and the 4 s do not matter.

Protocol: JSON lines. The executor writes ``{"id", "args", "env", "cwd", "log"}`` to the
server's stdin; the server answers ``{"id", "pid"}`` once the child has its own session, and
``{"id", "returncode"}`` (negative: killed by that signal) when it ends. The server exits when
its stdin closes, so it never outlives the executor; the points it started keep running, as
fresh processes would, and a later executor stops them through the ledger.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, NoReturn

#: The suite's command-line entry point, and the module a point's command runs.
CLI_MODULE = "taskonomy.experiments.cli"
#: Modules the server imports before its first fork: what every point imports anyway.
PRELOAD = (
    CLI_MODULE,
    "taskonomy.experiments.train",
    "taskonomy.experiments.transfer",
    "wandb",
)
#: Seconds the server may take to import everything before the executor gives up on it.
STARTUP_TIMEOUT_S = 300.0


class WarmStartError(RuntimeError):
    """The warm starter could not start or stopped answering."""


def suite_arguments(argv: Sequence[str]) -> list[str] | None:
    """The CLI arguments of a command line that runs this suite's CLI with this interpreter.

    ``[sys.executable, "-m", "taskonomy.experiments.cli", *args]`` (how a sweep file's
    ``taskonomy`` program is expanded) gives ``args``; any other program gives ``None`` and
    runs as a fresh process.
    """
    if len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m" and argv[2] == CLI_MODULE:
        return list(argv[3:])
    return None


class WarmProcess:
    """A point started by a :class:`WarmStarter`; ``wait`` works like ``Popen.wait``."""

    def __init__(self, starter: WarmStarter, request_id: int, pid: int) -> None:
        self._starter = starter
        self._id = request_id
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int | None:
        """Block until the point ends; its exit status (negative: the signal that killed it).

        ``None`` when the server died first: the point was then watched until it ended, but
        its status is lost (its run record still tells whether it finished).
        """
        self.returncode = self._starter._wait(self._id, self.pid)
        return self.returncode


class WarmStarter:
    """Executor side of the warm starter: starts the server and launches points through it.

    Args:
        env: The server's environment. Math libraries read their thread counts when they are
            loaded, so this should carry the points' ``OMP_NUM_THREADS``.
        log: File that receives the server's own output (import errors, for one).
        preload: Modules to import before the first fork.
        entry: ``module:function`` that each child calls with the point's arguments; it
            returns the exit status. The module also becomes the child's ``__main__``, so that
            a child that re-executes itself (Lightning's multi-device launch) runs it again.
    """

    def __init__(self, env: Mapping[str, str], log: str | Path, *,
                 preload: Sequence[str] = PRELOAD, entry: str = f"{CLI_MODULE}:main") -> None:
        self._log = open(log, "ab")  # noqa: SIM115 (closed in close())
        config = json.dumps({"preload": list(preload), "entry": entry})
        self._proc = subprocess.Popen(
            [sys.executable, "-m", __name__, config], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, env=dict(env),
            start_new_session=True,  # a Ctrl-C at the terminal is the executor's to handle
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._stdin: IO[bytes] = self._proc.stdin
        self._stdout: IO[bytes] = self._proc.stdout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._replies: dict[int, dict[str, Any]] = {}
        self._next_id = 0
        self._gone = False
        self._ready = False
        self._reader = threading.Thread(target=self._read_replies, daemon=True,
                                        name="warm-start-replies")
        self._reader.start()
        with self._changed:
            self._changed.wait_for(lambda: self._ready or self._gone, timeout=STARTUP_TIMEOUT_S)
            ready, gone = self._ready and not self._gone, self._gone
        if not ready:
            self.close()
            raise WarmStartError(
                f"the warm starter exited while importing the suite (status "
                f"{self._proc.returncode}); see {log}" if gone else
                f"the warm starter did not finish its imports in {STARTUP_TIMEOUT_S:.0f} s; "
                f"see {log}")

    def _read_replies(self) -> None:
        try:
            for line in self._stdout:
                try:
                    reply = json.loads(line)
                except json.JSONDecodeError:
                    continue
                with self._changed:
                    if reply.get("ready"):
                        self._ready = True
                    else:
                        self._replies.setdefault(int(reply["id"]), {}).update(reply)
                    self._changed.notify_all()
        finally:  # the server is gone (or unreadable): nobody waits forever on it
            with self._changed:
                self._gone = True
                self._changed.notify_all()

    def start(self, args: Sequence[str], env: Mapping[str, str], log: str | Path,
              cwd: str | Path | None = None) -> WarmProcess:
        """Fork a child that runs ``entry(args)`` with ``env``, in ``cwd``, writing to ``log``.

        Returns once the child has a session of its own, so ``os.killpg(pid, ...)`` reaches
        it and everything it starts.

        Raises:
            WarmStartError: The server is gone; the caller should start the point afresh.
        """
        request = {"args": list(args), "env": dict(env), "log": str(log),
                   "cwd": str(cwd if cwd is not None else Path.cwd())}
        with self._changed:
            if self._gone:
                raise WarmStartError("the warm starter has exited")
            request_id = self._next_id
            self._next_id += 1
            try:
                self._stdin.write((json.dumps({"id": request_id, **request}) + "\n").encode())
                self._stdin.flush()
            except (BrokenPipeError, ValueError) as error:
                raise WarmStartError("the warm starter has exited") from error
            self._changed.wait_for(lambda: "pid" in self._replies.get(request_id, {})
                                   or self._gone)
            reply = self._replies.get(request_id, {})
            if "pid" not in reply:
                raise WarmStartError("the warm starter exited before it started the point")
            return WarmProcess(self, request_id, int(reply["pid"]))

    def _wait(self, request_id: int, pid: int) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: "returncode" in self._replies.get(request_id, {})
                                   or self._gone)
            reply = self._replies.pop(request_id, {})
        if "returncode" in reply:
            return int(reply["returncode"])
        while _running(pid):  # the server died: the child is now init's, watch it by pid
            time.sleep(0.5)
        return None

    def close(self) -> None:
        """Stop the server (points it started run on) and release its files."""
        with contextlib.suppress(OSError, ValueError):
            self._stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._reader.join(timeout=10)
        self._stdout.close()
        self._log.close()


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


# ------------------------------------------------------------------------------ the server


def _serve(preload: Sequence[str], entry: str) -> None:
    """Import ``preload``, then fork one child per request until stdin closes."""
    # Replies leave through a private copy of stdout; fd 1 joins the server's log, so that a
    # module printing while it is imported cannot garble them.
    global _REPLIES
    _REPLIES = os.dup(1)
    os.dup2(2, 1)
    for name in preload:
        importlib.import_module(name)
    entry_module, entry_function = entry.split(":")
    importlib.import_module(entry_module)
    # SIGCHLD wakes the selector below through this pipe, so ended children are answered
    # at once rather than at the next poll.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    children: dict[int, int] = {}
    _reply({"ready": True})
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "requests")
    selector.register(wake_r, selectors.EVENT_READ, "children")
    pending = b""
    while True:
        for key, _ in selector.select(timeout=5.0):
            if key.data == "children":
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 4096)
                continue
            data = os.read(0, 1 << 16)
            if not data:  # the executor closed its end, or died
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                request = json.loads(line)
                pid = _fork_point(request, entry_module, entry_function,
                                  (wake_r, wake_w, _REPLIES))
                children[pid] = int(request["id"])
                _reply({"id": request["id"], "pid": pid})
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in children:
                _reply({"id": children.pop(pid),
                        "returncode": os.waitstatus_to_exitcode(status)})


#: The server's file descriptor for replies (set by :func:`_serve`).
_REPLIES = 1


def _reply(message: dict[str, Any]) -> None:
    os.write(_REPLIES, (json.dumps(message) + "\n").encode())


def _fork_point(request: dict[str, Any], entry_module: str, entry_function: str,
                server_fds: tuple[int, ...]) -> int:
    """Fork a child for one request; return its pid once it has left the server's session."""
    ready_r, ready_w = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking with threads; the only ones here are the BLAS
        # library's idle workers, which register their own fork handlers.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        _become_point(request, entry_module, entry_function, server_fds, ready_w)
    os.close(ready_w)
    os.read(ready_r, 1)  # the child's new session exists (or the child is already gone)
    os.close(ready_r)
    return pid


def _become_point(request: dict[str, Any], entry_module: str, entry_function: str,
                  server_fds: tuple[int, ...], ready_w: int) -> NoReturn:
    """In the child: become the point's process, run it, and exit with its status."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    for fd in server_fds:
        os.close(fd)
    # The signal dispositions of a freshly started Python process.
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    os.write(ready_w, b".")
    os.close(ready_w)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _fresh_process_state()
    module = sys.modules[entry_module]
    args = list(request["args"])
    # As under `python -m MODULE ARGS`: Lightning relaunches a multi-device run as
    # `python -m <__main__.__spec__.name> <sys.argv[1:]>`, and spawned workers import it.
    sys.argv = [str(getattr(module, "__file__", entry_module)), *args]
    sys.modules["__main__"] = module
    try:
        status = getattr(module, entry_function)(args)
    except SystemExit as leaving:
        status = leaving.code
    except KeyboardInterrupt:
        _finish(None)
        # As Python itself does: die of SIGINT, so the parent sees the interruption.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    os._exit(_finish(status))


def _finish(status: object) -> int:
    """Shut down as the interpreter does, up to where its teardown starts; the exit status.

    Non-daemon threads are joined and atexit hooks run (W&B's, logging's, multiprocessing's),
    and output is flushed. The module teardown that follows in a fresh process is skipped: it
    frees memory that exiting frees anyway, and takes about 1 s with torch loaded.
    """
    if status is None:
        code = 0
    elif isinstance(status, int):
        code = status
    else:  # sys.exit("message")
        print(status, file=sys.stderr)
        code = 1
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code & 0xFF


def _fresh_process_state() -> None:
    """Undo what a child inherits from the server that a fresh process would not have."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit():
        import torch

        if torch.get_num_threads() != int(threads):
            torch.set_num_threads(int(threads))
    np = sys.modules.get("numpy")
    if np is not None:  # numpy's global generator is seeded at import: re-seed per point
        np.random.seed()


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    _serve(settings["preload"], settings["entry"])
