"""`rawsse serve --workers N`: the parent process. It creates the shared event log and
the workers' eventfds, forks N workers that each listen on the port (SO_REUSEPORT) with
their own reactor, starts a new worker in place of one that dies, and on SIGTERM or SIGINT
passes the signal on and waits for the workers' graceful shutdown.

The parent runs no event loop and serves nothing: it forks before any loop exists, so
each worker starts clean (uvloop and epoll do not survive a fork)."""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import os
import signal
import socket
import tempfile
import time
from types import FrameType

from rawsse.broker.ring import SharedLog
from rawsse.broker.workers import WorkerContext
from rawsse.config import Config
from rawsse.proto.ids import new_epoch

log = logging.getLogger("rawsse")

MIN_LOG_BYTES = 1024 * 1024
"""The worker log holds what a restarted worker loads into its history (`--history-bytes`),
and never less than this."""

PR_SET_PDEATHSIG = 1
"""From <linux/prctl.h>."""

RESTART_BACKOFF_MAX = 5.0
"""A worker that keeps dying at start is restarted at most this often."""

_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.count = config.worker_count()
        self._reservation: socket.socket | None = None
        if config.port == 0:
            config = dataclasses.replace(config, port=self._reserve_port(config.host))
        self.config = config
        # Room for the history a restarted worker loads, and for the largest event 4 times;
        # with a Redis broker the workers are nodes and the log goes unused.
        size = max(config.history_bytes, 4 * (config.max_pending_bytes + 64 * 1024), MIN_LOG_BYTES)
        if config.broker != "memory":
            size = MIN_LOG_BYTES
        self._log = self._create_log(size)
        # The file is unlinked at once (nothing to leak, whatever kills us); workers reopen
        # it through the fd they inherit, each its own open file, so flock tells them apart.
        self.log_path = f"/proc/self/fd/{self._log.fd}"
        self._wake_fds = tuple(os.eventfd(0, os.EFD_NONBLOCK) for _ in range(self.count))
        self._epoch = new_epoch()
        self.children: dict[int, int] = {}
        """pid -> worker index"""
        self._started = [0.0] * self.count
        self._backoff = [0.0] * self.count
        self._stopping = False

    def _create_log(self, size: int) -> SharedLog:
        """In /dev/shm (memory) when it has room, else in the temporary directory."""
        name = f"rawsse-{os.getpid()}-{os.urandom(4).hex()}"
        directories = [d for d in ("/dev/shm", tempfile.gettempdir()) if os.path.isdir(d)]
        for directory in directories:
            path = os.path.join(directory, name)
            try:
                SharedLog.create(path, size)
                shared = SharedLog(path)
                os.unlink(path)
                return shared
            except OSError as exc:
                log.warning("cannot create the worker log in %s (%s)", directory, exc)
        raise RuntimeError("no room for the worker log; lower --history-bytes")

    def _reserve_port(self, host: str) -> int:
        """For --port 0: pick a free port once, for every worker. The bound socket stays
        open (never listening) so the port stays ours."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._reservation = socket.socket(family, socket.SOCK_STREAM)
        self._reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._reservation.bind((host, 0))
        port: int = self._reservation.getsockname()[1]
        return port

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGALRM, self._on_grace_over)
        log.info("rawsse supervisor: %d workers on port %d", self.count, self.config.port)
        try:
            for index in range(self.count):
                self._spawn(index)
            while self.children:
                try:
                    pid, status = os.wait()
                except ChildProcessError:
                    break
                index = self.children.pop(pid, -1)
                if index < 0:
                    continue
                self._log.leave(index)
                if self._stopping:
                    continue
                log.warning("worker %d (pid %d) %s; starting another", index, pid, _describe(status))
                self._restart(index)
        finally:
            signal.alarm(0)
            self._log.close()
            for fd in self._wake_fds:
                os.close(fd)
            if self._reservation is not None:
                self._reservation.close()
        log.info("stopped")

    def _restart(self, index: int) -> None:
        lived = time.monotonic() - self._started[index]
        backoff = min(max(self._backoff[index] * 2, 0.1), RESTART_BACKOFF_MAX)
        self._backoff[index] = 0.0 if lived > 10 else backoff
        if self._backoff[index]:
            time.sleep(self._backoff[index])
        if not self._stopping:
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        context = WorkerContext(index, self.count, self.log_path, self._epoch, self._wake_fds)
        # Signals wait until the child has its own handlers; the parent's must not run there.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        if self._stopping:  # a signal came between the decision to start and the block
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            return
        supervisor = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for signum in (*_SIGNALS, signal.SIGALRM):
                    signal.signal(signum, signal.SIG_DFL)
                _stop_with(supervisor)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
                if self._reservation is not None:
                    self._reservation.close()
                from rawsse.reactor.main import run

                run(self.config, context)
                code = 0
            except BaseException:
                log.exception("worker %d failed", index)
            finally:
                logging.shutdown()
                os._exit(code)
        self.children[pid] = index
        self._started[index] = time.monotonic()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            return
        self._stopping = True
        log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.children))
        for pid in self.children:
            os.kill(pid, signal.SIGTERM)
        signal.alarm(int(self.config.shutdown_grace) + 5)

    def _on_grace_over(self, signum: int, frame: FrameType | None) -> None:
        for pid in self.children:
            log.warning("worker pid %d did not stop in time; killing it", pid)
            os.kill(pid, signal.SIGKILL)


def _stop_with(supervisor: int) -> None:
    """Have the kernel send this worker SIGTERM when the supervisor dies, however it dies,
    so no orphaned worker keeps serving the port with a log no one else reads."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
    if os.getppid() != supervisor:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
