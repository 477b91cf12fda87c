"""Start sweep points from a process that has already imported the suite.

The local executor runs every point as a process of its own, so a crash, a leak or a stuck
dataloader stays in that point. A fresh ``python -m taskonomy.experiments.cli`` spends about
4 s importing torch, Lightning, torchmetrics and W&B before it reads its first argument, which
is a third of a short CPU transfer. A *warm starter* pays for the imports once: it is a small
server process that imports the suite and then forks one child per point. Each child leaves
the server's session, takes the point's environment, working folder and log file, and runs the
command line as ``python -m taskonomy.experiments.cli`` would, exit status included.

Forking is only safe while the server has not touched CUDA (a CUDA context does not survive a
fork), and the server never runs a tensor operation, so torch's OpenMP team does not exist yet
(the BLAS library's idle pool does; it registers its own fork handlers).
The executor uses warm starts where no GPU is visible and fresh processes elsewhere; on a GPU
box each point runs for minutes, and the 4 s do not matter.

What a warm point shares with the server, unlike a fresh process: the string-hash seed (set
iteration order is the same in every point; no result may depend on it anyway), and its command
line as ``ps`` shows it (``python -m taskonomy.experiments.warm_start ...``; the ledger and the
log name the point). At exit it runs the interpreter's shutdown up to the module teardown
(threads joined, atexit hooks, open files flushed) and skips the teardown itself.

Protocol: JSON lines. The server says ``{"ready": true}`` once it has imported everything. The
executor writes ``{"id", "args", "env", "cwd", "log"}`` to the server's stdin; the server answers
``{"id", "pid"}`` once the child has its own session (and only then lets the child run), and
``{"id", "returncode"}`` (negative: killed by that signal) when it ends. The server exits when
its stdin closes, so it never outlives the executor; the points it started keep running, as
fresh processes would, and a later executor stops them through the ledger.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import io
import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
#: Seconds the server may take to fork a point and name its pid.
ANSWER_TIMEOUT_S = 60.0


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

    def __init__(self, starter: WarmStarter, request_id: int, pid: int,
                 identity: str | None) -> None:
        self._starter = starter
        self._id = request_id
        self._identity = identity
        self.pid = pid
        self.returncode: int | None = None

    def wait(self) -> int | None:
        """Block until the point ends; its exit status (negative: the signal that killed it).

        ``None`` when the server died first: the point was then watched until it ended, but
        its status is lost (its run record still tells whether it finished).
        """
        self.returncode = self._starter._wait(self._id, self.pid, self._identity)
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
            answered = self._changed.wait_for(
                lambda: "pid" in self._replies.get(request_id, {}) or self._gone,
                timeout=ANSWER_TIMEOUT_S)
            reply = self._replies.get(request_id, {})
        if "pid" not in reply and not answered:
            # Stuck: kill it (a child not yet let go then exits), and read what it said before
            # it died, so that a point it did start is watched rather than started twice.
            self._proc.kill()
            self._reader.join(timeout=10)
            with self._changed:
                reply = self._replies.get(request_id, {})
        if "pid" not in reply:
            raise WarmStartError("the warm starter did not start the point" + (
                "" if answered else f" within {ANSWER_TIMEOUT_S:.0f} s"))
        pid = int(reply["pid"])
        return WarmProcess(self, request_id, pid, process_identity(pid))

    def _wait(self, request_id: int, pid: int, identity: str | None) -> int | None:
        with self._changed:
            self._changed.wait_for(lambda: "returncode" in self._replies.get(request_id, {})
                                   or self._gone)
            reply = self._replies.pop(request_id, {})
        if "returncode" in reply:
            return int(reply["returncode"])
        # The server died: the child is now init's; watch it by pid and start time (a pid
        # alone may name another process once it ended).
        while identity is not None and process_identity(pid) == identity:
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


def process_identity(pid: int) -> str | None:
    """Boot id and start time of a running process, or None (ended, a zombie, or not Linux).

    A pid alone is not an identity: after a reboot or once the process exits, the number names
    some other process.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 3 is the state, field 22 the start time in clock ticks since boot; both follow the
    # parenthesised command name.
    fields = stat.rsplit(")", 1)[-1].split()
    if fields[:1] == ["Z"] or len(fields) < 20:
        return None
    return f"{boot}:{fields[19]}"


# ------------------------------------------------------------------------------ the server


#: Signals whose disposition a child gets back as the server found it at its start.
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE,
            signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


@dataclass
class _Server:
    """What every child needs from the server: its entry point and what it must undo."""

    entry_module: str
    entry_function: str
    #: Signal dispositions the server was started with (an ignored SIGHUP under nohup stays
    #: ignored in every point, as in a fresh process).
    dispositions: dict[int, Any]
    #: Environment variables the preloaded modules set while they were imported, with the
    #: value they had before (``None``: unset). A fresh point's imports would set them again.
    import_environment: dict[str, tuple[str | None, str]]
    #: Descriptors of the server that no child may keep.
    fds: list[int]


def _serve(preload: Sequence[str], entry: str) -> None:
    """Import ``preload``, then fork one child per request until stdin closes."""
    dispositions = {int(sig): signal.getsignal(sig) for sig in _SIGNALS}
    # Replies leave through a private copy of stdout; fd 1 joins the server's log, so that a
    # module printing while it is imported cannot garble them.
    global _REPLIES
    _REPLIES = os.dup(1)
    os.dup2(2, 1)
    before = dict(os.environ)
    for name in preload:
        importlib.import_module(name)
    entry_module, entry_function = entry.split(":")
    importlib.import_module(entry_module)
    # What the imports printed or wrote but left buffered would otherwise be written again
    # by every child at its exit.
    _flush_open_files()
    imported = {key: (before.get(key), value) for key, value in os.environ.items()
                if before.get(key) != value}
    # SIGCHLD wakes the selector below through this pipe, so ended children are answered
    # at once rather than at the next poll.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_w)
    selector = selectors.DefaultSelector()
    selector.register(0, selectors.EVENT_READ, "requests")
    selector.register(wake_r, selectors.EVENT_READ, "children")
    server = _Server(entry_module, entry_function, dispositions, imported,
                     [wake_r, wake_w, _REPLIES, selector.fileno()])
    children: dict[int, int] = {}
    _reply({"ready": True})
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
                _fork_point(json.loads(line), server, children)
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


def _fork_point(request: dict[str, Any], server: _Server, children: dict[int, int]) -> None:
    """Fork a child for one request and tell the executor its pid.

    Two steps: the child first leaves the server's session and says so, the server replies
    with its pid, and only then lets it go on. A server that dies in between (its pipe
    closes) takes the child with it, so the executor, which then starts the point afresh,
    never leaves a second copy running.
    """
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking with threads; the only ones here are the BLAS
        # library's idle workers, which register their own fork handlers.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        os.close(ready_r)
        os.close(go_w)
        _become_point(request, server, ready_w, go_r)
    os.close(ready_w)
    os.close(go_r)
    os.read(ready_r, 1)  # the child's new session exists (or the child is already gone)
    os.close(ready_r)
    children[pid] = int(request["id"])
    _reply({"id": request["id"], "pid": pid})
    with contextlib.suppress(BrokenPipeError):
        os.write(go_w, b".")
    os.close(go_w)


def _become_point(request: dict[str, Any], server: _Server, ready_w: int,
                  go_r: int) -> NoReturn:
    """In the child: become the point's process, run it, and exit with its status."""
    os.setsid()
    signal.set_wakeup_fd(-1)
    for fd in server.fds:
        os.close(fd)
    for signum, disposition in server.dispositions.items():
        if disposition is not None:  # None: set outside Python, left as it is
            signal.signal(signum, disposition)
    os.write(ready_w, b".")
    os.close(ready_w)
    if os.read(go_r, 1) != b".":  # the server died before it could name us: do nothing
        os._exit(1)
    os.close(go_r)
    devnull = os.open(os.devnull, os.O_RDONLY)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    os.chdir(request["cwd"])
    environment = dict(request["env"])
    for key, (was, now) in server.import_environment.items():
        if environment.get(key) == was:  # what the point's own imports would have set
            environment[key] = now
    os.environ.clear()
    os.environ.update(environment)
    _fresh_process_state()
    module = sys.modules[server.entry_module]
    args = list(request["args"])
    # As under `python -m MODULE ARGS`: Lightning relaunches a multi-device run as
    # `python -m <__main__.__spec__.name> <sys.argv[1:]>`, and spawned workers import it.
    sys.argv = [str(getattr(module, "__file__", server.entry_module)), *args]
    sys.modules["__main__"] = module
    try:
        status = getattr(module, server.entry_function)(args)
    except SystemExit as leaving:
        status = leaving.code
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        _finish(None)
        # As Python itself does: die of SIGINT, so the parent sees the interruption.
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        status = 130  # not reached
    except BaseException:
        sys.excepthook(*sys.exc_info())
        status = 1
    os._exit(_finish(status))


def _finish(status: object) -> int:
    """Shut down as the interpreter does, up to where its teardown starts; the exit status.

    Non-daemon threads are joined, atexit hooks run (W&B's, logging's, multiprocessing's),
    and every open file is flushed, which is what a fresh process's teardown does for files
    kept in module globals or cycles. The rest of the teardown, freeing memory that exiting
    frees anyway, is skipped: with torch loaded it takes about 1 s.
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
    _flush_open_files()
    return code & 0xFF


def _flush_open_files() -> None:
    """Flush stdout, stderr and every other file open for writing."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for obj in gc.get_objects():
        # type(), not isinstance(): some objects (deprecated torch proxies) warn when asked
        # for their __class__.
        if issubclass(type(obj), io.IOBase):
            with contextlib.suppress(Exception):
                if not obj.closed and obj.writable():
                    obj.flush()


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
    _own_wandb_media_folder()


def _own_wandb_media_folder() -> None:
    """Give the child a W&B media staging folder of its own.

    W&B makes one temporary folder at import, where images and tables are staged before they
    enter the run, and removes it at exit. Every child would inherit the server's and remove
    it when it ends, so the points still running lost their panels and per-image tables.
    """
    private = sys.modules.get("wandb.sdk.data_types._private")
    media = getattr(private, "MEDIA_TMP", None)
    if not isinstance(media, tempfile.TemporaryDirectory):
        return
    finalizer = getattr(media, "_finalizer", None)
    if finalizer is not None:
        finalizer.detach()  # the server's folder is the server's to remove
    own = tempfile.TemporaryDirectory("wandb-media")
    media.name = own.name  # every W&B module reads the folder through this one object
    private._taskonomy_media = own  # type: ignore[union-attr]  # removes the folder at exit


if __name__ == "__main__":
    settings = json.loads(sys.argv[1])
    _serve(settings["preload"], settings["entry"])
