"""The tests' `python -m minimind_tui` processes start from a prewarmed interpreter.

The suite starts ~170 real CLI processes, and each spent ~3 s of CPU importing torch and
transformers before its work (a 3-step training run: 5.1 s of CPU by exec, 2.1 s as a copy).
Here each xdist worker starts one helper interpreter that imports those two (and pydantic)
once; a test's `python -m minimind_tui ...` (or `python SCRIPT.py ...` or `python -c CODE`,
a test's code that patches ours before it runs the CLI) is then a copy of the helper, cloned
with CLONE_PARENT so that it is the test's own child: its own pid, exit status, signals,
session, working folder, environment and stdio, as `Popen` asked. The copy then runs the
module, script or code exactly as `python` does (runpy, argv, `sys.path[0]`, a fresh
`__main__`, fresh `sys.std*` streams). Our own packages are imported by the copy, never by
the helper.

What a copy could not reproduce still runs by exec: any other command, a terminal on its
stdio, `pass_fds`/`preexec_fn`/user or group changes, an environment that differs in a
variable read while torch or transformers are imported, and a helper that is not single
threaded. A process whose environment has `MINIMIND_TEST_EXEC=1` runs by exec (a test of
what a command imports needs a fresh interpreter), and every process does when the suite runs
with it. What differs from an exec: the hash seed is the helper's, and /proc shows the
helper's command line and environment block for the copy (`ps`; the copy's own `os.environ`
is the request's).

Run as a script, this module is the helper: `python prewarmed.py FD`.
"""

from __future__ import annotations

import ctypes
import importlib
import inspect
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import threading

MODULE = "minimind_tui"
# pydantic too: importing it in each copy cost ~0.1 s, and its allocations set off a full
# garbage collection over every object torch had made (0.17 s), of a 3-step run's ~2.7 s.
PREWARMED = ("torch", "transformers.modeling_utils", "pydantic.main", "pydantic.type_adapter",
             "pydantic.functional_validators")
# Read by torch, transformers or the interpreter while they start, so a copy carries the
# helper's values: a request that differs in one of these runs by exec.
READ_AT_START = ("PYTHON", "LD_", "LC_", "LANG", "OMP_", "MKL_", "KMP_", "TORCH", "PYTORCH",
                 "CUDA", "HF_", "HUGGINGFACE", "TRANSFORMERS", "TOKENIZERS", "SAFETENSORS",
                 "PYDANTIC")
HANDLED_AT_START = {"PYTHONUNBUFFERED"}  # the copy builds its streams from the request's
CLONE_PARENT = 0x8000
SYS_CLONE = {"x86_64": 56, "aarch64": 220}


def start_values(env) -> dict[str, str]:
    return {k: v for k, v in env.items()
            if k.startswith(READ_AT_START) and k not in HANDLED_AT_START}


# -- the helper ------------------------------------------------------------------------------

def serve(fd: int) -> int:
    for name in PREWARMED:
        importlib.import_module(name)

    channel = socket.socket(fileno=fd)
    single = len(os.listdir("/proc/self/task")) == 1  # a clone copies only the calling thread
    number = SYS_CLONE.get(platform.machine())
    ready = single and number is not None
    try:
        channel.send(json.dumps({"ready": ready}).encode())
    except ConnectionError:  # the worker finished (a short pass) before the imports did
        return 0
    libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the GIL stays held, as in os.fork
    libc.syscall.restype = ctypes.c_long
    flags = ctypes.c_long(CLONE_PARENT | signal.SIGCHLD)  # SIGCHLD: what the parent is sent
    while ready:
        try:
            data, fds, _, _ = socket.recv_fds(channel, 1 << 20, 3)
        except ConnectionError:
            data = b""
        if not data:
            return 0  # the worker has gone
        request = json.loads(data)
        # Popen returns once the child has its session, stdio and folder (an exec has them
        # before it starts): the copy closes `settled` when it has them, the reply waits.
        waiting, settled = os.pipe()
        ctypes.pythonapi.PyOS_BeforeFork()
        pid = libc.syscall(ctypes.c_long(number), flags, *[ctypes.c_long(0)] * 4)
        if pid == 0:
            ctypes.pythonapi.PyOS_AfterFork_Child()
            channel.detach()
            become(request, fds)  # never returns: the module exits the process
        ctypes.pythonapi.PyOS_AfterFork_Parent()
        for one in (*fds, settled):
            os.close(one)
        os.read(waiting, 1)  # end of file: the copy has closed every descriptor above 2
        os.close(waiting)
        answer = {"pid": pid} if pid > 0 else {"error": os.strerror(ctypes.get_errno())}
        channel.send(json.dumps(answer).encode())
    return 0


def become(request: dict, fds: list[int]) -> None:
    """Turn this copy into `python -m minimind_tui ARGS` (`python SCRIPT ARGS`, `python -c
    CODE ARGS`) with the request's stdio and world."""
    if request["new_session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # which also tells the helper: settled
    unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
    sys.stdin, sys.stdout, sys.stderr = (fresh_stream(fd, model, unbuffered) for fd, model
                                         in enumerate((sys.stdin, sys.stdout, sys.stderr)))
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr
    import runpy

    how, what = request["main"]
    if how == "-m":
        sys.path[0] = os.getcwd()
        sys.argv = ["-m", *request["args"]]
        runpy._run_module_as_main(what)  # what `python -m` calls
    elif how == "-c":
        sys.path[0] = ""
        sys.argv = ["-c", *request["args"]]
        main = sys.modules["__main__"] = type(sys)("__main__")
        exec(compile(what, "<string>", "exec"), main.__dict__)
    else:
        sys.path[0] = os.path.dirname(os.path.abspath(what))
        sys.argv = [what, *request["args"]]
        runpy.run_path(what, run_name="__main__")
    sys.exit(0)


def fresh_stream(fd: int, model: io.TextIOWrapper, unbuffered: bool) -> io.TextIOWrapper:
    """A standard stream as the interpreter builds it at start (Python/pylifecycle.c), with
    the helper's encoding (the request's locale and PYTHONIOENCODING are the helper's)."""
    writing = fd != 0
    buffer = open(fd, "wb" if writing else "rb", buffering=0 if unbuffered and writing else -1,
                  closefd=False)
    stream = io.TextIOWrapper(buffer, encoding=model.encoding, errors=model.errors,
                              newline="\n" if writing else None,
                              line_buffering=not unbuffered and (os.isatty(fd) or fd == 2),
                              write_through=unbuffered)
    stream.mode = "w" if writing else "r"
    return stream


# -- the worker's side -----------------------------------------------------------------------

class Helper:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.env = start_values(os.environ)
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(theirs.fileno())], pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        self.channel = ours
        self.lock = threading.Lock()
        self.ready: bool | None = None

    def clone_ready(self) -> bool:
        with self.lock:
            if self.ready is None:  # the helper says so once it has imported
                try:
                    self.ready = bool(self.answer().get("ready"))
                except (OSError, ValueError):
                    self.ready = False
            return self.ready

    def clone(self, request: dict, fds: list[int]) -> int | None:
        if not self.clone_ready():
            return None
        with self.lock:
            try:
                socket.send_fds(self.channel, [json.dumps(request).encode()], fds)
                return self.answer().get("pid")
            except (OSError, ValueError):
                self.ready = False
                return None

    def answer(self) -> dict:
        return json.loads(self.channel.recv(1 << 16) or b"{}")

    def close(self) -> None:
        self.channel.close()
        self.process.wait(timeout=60)


_helper: Helper | None = None
_execute_child = subprocess.Popen._execute_child
_parameters = inspect.signature(_execute_child)


def the_helper() -> Helper:
    """This process's helper, started by its first CLI process (xdist's controller has none)."""
    global _helper
    if _helper is None:
        _helper = Helper()
    return _helper


def _cloned(popen: subprocess.Popen, *args, **kwargs) -> None:
    call = _parameters.bind(popen, *args, **kwargs).arguments
    if not _suits(call):
        return _execute_child(popen, *args, **kwargs)
    helper = the_helper()
    fds = [fd if fd != -1 else default
           for fd, default in ((call["p2cread"], 0), (call["c2pwrite"], 1), (call["errwrite"], 2))]
    env = {os.fsdecode(k): os.fsdecode(v)
           for k, v in (os.environ if call["env"] is None else call["env"]).items()}
    argv = [os.fsdecode(a) for a in call["args"][1:]]
    if argv[0] in ("-m", "-c"):  # ["-m", MODULE] or ["-c", CODE]
        main, rest = argv[:2], argv[2:]
    else:  # a script's path
        main, rest = ["", argv[0]], argv[1:]
    request = {"main": main, "args": rest, "env": env,
               "cwd": os.path.abspath(os.fsdecode(call["cwd"] or os.getcwd())),
               "new_session": bool(call["start_new_session"])}
    if (start_values(env) != helper.env or env.get("MINIMIND_TEST_EXEC")
            or any(os.isatty(fd) for fd in fds)
            or not os.path.isdir(request["cwd"])):  # exec's own error for a missing folder
        return _execute_child(popen, *args, **kwargs)
    pid = helper.clone(request, fds)
    if not pid:
        return _execute_child(popen, *args, **kwargs)
    popen.pid = pid
    popen._child_created = True
    popen._close_pipe_fds(call["p2cread"], call["p2cwrite"], call["c2pread"], call["c2pwrite"],
                          call["errread"], call["errwrite"])


def _suits(call: dict) -> bool:
    args = call["args"]
    if not isinstance(args, (list, tuple)) or len(args) < 2:
        return False
    args = [os.fsdecode(a) for a in args]
    # A script's path is taken as given, relative to the parent's folder (an exec's is the
    # child's `cwd`): a test that names one relative to another folder runs by exec.
    script = args[1].endswith(".py") and call["cwd"] is None and os.path.isfile(args[1])
    code = args[1] == "-c" and len(args) >= 3
    return (args[0] == sys.executable and (args[1:3] == ["-m", MODULE] or code or script)
            and call["executable"] is None and not call["shell"] and call["preexec_fn"] is None
            and call["close_fds"] and not call["pass_fds"] and call["restore_signals"]
            and call["uid"] is None and call["gid"] is None and call["gids"] is None
            and call["umask"] < 0 and call["process_group"] in (None, -1))


def serving() -> bool:
    """Whether CLI processes start as copies here."""
    return subprocess.Popen._execute_child is _cloned and the_helper().clone_ready()


def helper_pids() -> set[int]:
    """This process's prewarmed interpreter, a child of it that tests counting children skip."""
    return {_helper.process.pid} if _helper is not None else set()


def pytest_sessionstart(session) -> None:
    if sys.platform == "linux" and not os.environ.get("MINIMIND_TEST_EXEC"):
        subprocess.Popen._execute_child = _cloned


def pytest_sessionfinish(session) -> None:
    global _helper
    subprocess.Popen._execute_child = _execute_child
    if _helper is not None:
        _helper.close()
        _helper = None


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
