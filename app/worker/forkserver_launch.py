"""Starting a pool's fork server (app/worker/forkserver.py), with nothing but ``os``
and the built-in ``_socket`` imported: ``stockq worker`` starts it before it imports
anything else (app/entry.py), so the plugins load there while the supervisor
imports the rest of itself."""

from __future__ import annotations

import _socket
import os
import signal
import sys
import time


class ServerProcess:
    """The fork server as its supervisor sees it: pid, exit code, wait and kill (what
    ``subprocess.Popen`` offers, without importing it before the launch)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # collected elsewhere: it is gone
                self.returncode = -signal.SIGKILL
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """Its exit code; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"the fork server {self.pid} did not exit")
            time.sleep(0.005)
        return code

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


Launched = tuple[int, "ServerProcess", int]  # socket fd, process, output fd


def launch(env: dict[str, str], worker_id: str) -> Launched:
    """Start a fork server for the supervisor (this process): the supervisor's end of
    its socket (a file descriptor), the process, and the read end of its
    stdout/stderr.  Light on purpose (``os`` and the built-in ``_socket`` only):
    ``stockq worker`` calls it before it imports anything else (app/entry.py)."""
    ours, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    ours_fd, theirs_fd = ours.detach(), theirs.detach()
    r_print, w_print = os.pipe()
    try:
        os.set_inheritable(theirs_fd, True)
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", "app.worker.forkserver", str(theirs_fd), str(os.getpid()),
             worker_id],
            env,
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, w_print, 1),
                          (os.POSIX_SPAWN_DUP2, w_print, 2)],
            setsid=True)
    except BaseException:
        os.close(ours_fd)
        os.close(r_print)
        raise
    finally:
        os.close(theirs_fd)
        os.close(w_print)
    return ours_fd, ServerProcess(pid), r_print
