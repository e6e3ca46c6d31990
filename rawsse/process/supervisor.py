"""`rawsse serve --workers N`: the parent process. It binds the port (once, for every
worker: see rawsse.reactor.listeners), creates the shared event log and the workers'
eventfds, forks N workers that each serve their own listening socket with their own
reactor, starts a new worker in place of one that dies, and on SIGTERM or SIGINT passes
the signal on and waits for the workers' graceful shutdown; SIGHUP is passed on too
(each worker reads the token keys again).

A worker says "ready" over a pipe once it serves, or why it could not start. A worker that
dies is restarted after a delay that doubles with each quick death (0.1 s up to 10 s); one
that fails at start START_FAILURES times in a row stops the whole server with its error,
since a fault no restart can fix must not loop forever.

The parent runs no event loop and serves nothing: it forks before any loop exists, so
each worker starts clean (uvloop and epoll do not survive a fork)."""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from rawsse.broker.workers import LogSeat, create_log
from rawsse.config import Config
from rawsse.core.ids import new_epoch
from rawsse.errors import WorkersFailed
from rawsse.preflight import check_environment
from rawsse.process.context import WorkerContext
from rawsse.process.parent import stop_with
from rawsse.process.single import serve
from rawsse.reactor.listeners import Listeners, listen_shared
from rawsse.store.directory import DataDirectory
from rawsse.store.events import EventStore, Fsync

log = logging.getLogger("rawsse")

START_FAILURES = 5
"""Failures at start in a row after which the supervisor gives up and exits 1."""

RESTART_BACKOFF_FIRST = 0.1
RESTART_BACKOFF_MAX = 10.0
"""The delay before restarting a worker that died soon after its start doubles from the
first value up to the second, as systemd's and Kubernetes' restart back-offs do."""

STABLE_AFTER = 10.0
"""A worker that served this long before dying is restarted at once, its back-off reset."""

START_TIMEOUT = 60.0
"""A worker that has not said "ready" this long after its fork is killed and counted as a
failed start: loading a large history from Redis takes seconds, a hang forever."""

READY = b"ready\n"
FAILED = b"failed "

_SIGNALS = {signal.SIGTERM, signal.SIGINT}


@dataclass
class _Worker:
    index: int
    pid: int = 0
    status_fd: int = -1
    ready: bool = False
    started: float = 0.0
    failures: int = 0
    backoff: float = 0.0
    restart_at: float | None = None
    error: str = ""
    unread: bytes = field(default=b"", repr=False)


class Supervisor:
    def __init__(self, config: Config) -> None:
        """Raises ConfigError for what the options need that this machine lacks, before
        the port is bound or a worker forked (each worker checks again as it starts)."""
        check_environment(config)
        self.count = config.worker_count()
        self.config = config
        memory = config.broker == "memory"
        self._epoch = new_epoch()
        first_sequence = 0
        self._data_directory = None
        if config.data_dir is not None:  # the workers' durable log: its epoch and where it ends
            self._data_directory, self._epoch, first_sequence = _open_data_directory(config, self._epoch)
        self._log = create_log(
            config.history_bytes, config.max_pending_bytes, memory, self.count, first_sequence
        )
        try:
            self._listeners: list[Listeners] = listen_shared(
                config.host, config.port, config.backlog, self.count
            )
        except BaseException:
            self._log.close()
            if self._data_directory is not None:
                self._data_directory.release()
            raise
        self.port: int = self._listeners[0][0].getsockname()[1]
        # The file is unlinked at once (nothing to leak, whatever kills us); workers reopen
        # it through the fd they inherit, each its own open file, so flock tells them apart.
        self.log_path = f"/proc/self/fd/{self._log.fd}"
        self._wake_fds = tuple(os.eventfd(0, os.EFD_NONBLOCK) for _ in range(self.count))
        self._workers = [_Worker(index) for index in range(self.count)]
        self._stop_signal = 0
        self._stopping = False
        self._grace_over = False
        self._failed: str | None = None

    # The main loop

    def run(self) -> None:
        """Serve until a signal (then return after the workers' shutdown), or raise
        WorkersFailed when a worker cannot be started."""
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        previous_wakeup = signal.set_wakeup_fd(wake_write)
        for signum in _SIGNALS:
            signal.signal(signum, self._on_stop_signal)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to wake select()
        signal.signal(signal.SIGALRM, self._on_grace_over)
        signal.signal(signal.SIGHUP, self._on_hangup)
        if log.isEnabledFor(logging.INFO):
            log.info("rawsse supervisor: %s on port %d", _plural(self.count, "worker"), self.port)
        else:  # the address a user needs (the port picked for --port 0), whatever the level
            where = f"http://{self.config.host}:{self.port} ({_plural(self.count, 'worker')})"
            print(f"rawsse listening on {where}", file=sys.stderr, flush=True)
        _import_what_workers_use()
        try:
            for worker in self._workers:
                self._spawn(worker)
            while self._alive() or not self._stopping:
                self._wait(wake_read)
                self._read_statuses()
                self._reap()
                if self._stop_signal and not self._stopping:
                    self._stop(signal.Signals(self._stop_signal).name)
                if self._grace_over:
                    self._grace_over = False
                    self._kill_remaining()
                if not self._stopping:
                    self._restart_due()
        finally:
            signal.alarm(0)
            signal.set_wakeup_fd(previous_wakeup)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_DFL)
            os.close(wake_read)
            os.close(wake_write)
            for worker in self._workers:
                if worker.status_fd >= 0:
                    os.close(worker.status_fd)
            self._close_listeners()
            self._log.close()
            for fd in self._wake_fds:
                os.close(fd)
            if self._data_directory is not None:
                self._data_directory.release()
        if self._failed is not None:
            raise WorkersFailed(self._failed)
        log.info("stopped")

    def _alive(self) -> bool:
        return any(worker.pid for worker in self._workers)

    def _wait(self, wake_read: int) -> None:
        """Until a signal, a worker's status line, or the next restart is due."""
        due = [w.restart_at for w in self._workers if w.restart_at is not None and not self._stopping]
        due += [w.started + START_TIMEOUT for w in self._workers if w.pid and not w.ready]
        timeout = max(min(due) - time.monotonic(), 0.0) if due else None
        watched = [wake_read, *(w.status_fd for w in self._workers if w.status_fd >= 0)]
        select.select(watched, [], [], timeout)
        try:
            while os.read(wake_read, 512):
                pass
        except BlockingIOError:
            pass

    def _read_statuses(self) -> None:
        for worker in self._workers:
            self._read_status(worker)

    def _read_status(self, worker: _Worker) -> None:
        """Take in what the worker said; at the end of its pipe (it exited), close it."""
        while worker.status_fd >= 0:
            try:
                chunk = os.read(worker.status_fd, 4096)
            except BlockingIOError:
                return
            if not chunk:
                os.close(worker.status_fd)
                worker.status_fd = -1
                return
            worker.unread += chunk
            while b"\n" in worker.unread:
                line, _, worker.unread = worker.unread.partition(b"\n")
                if line + b"\n" == READY:
                    worker.ready = True
                    worker.failures = 0
                elif line.startswith(FAILED):
                    worker.error = line[len(FAILED) :].decode(errors="replace")

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = next((w for w in self._workers if w.pid == pid), None)
            if worker is not None:
                self._died(worker, status)

    def _died(self, worker: _Worker, status: int) -> None:
        pid, worker.pid = worker.pid, 0
        self._read_status(worker)  # its last words, written just before it exited
        self._log.leave(worker.index)
        if self._stopping:
            return
        if not worker.ready:
            worker.failures += 1
            reason = worker.error or _describe(status)
            if worker.failures >= START_FAILURES:
                self._failed = (
                    f"worker {worker.index} failed to start {START_FAILURES} times in a row: {reason}"
                )
                log.error("%s; stopping", self._failed)
                self._stop("giving up")
                return
            log.warning(
                "worker %d could not start (%s); attempt %d of %d",
                worker.index,
                reason,
                worker.failures + 1,
                START_FAILURES,
            )
        else:
            log.warning("worker %d (pid %d) %s; starting another", worker.index, pid, _describe(status))
        lived = time.monotonic() - worker.started
        if worker.ready and lived > STABLE_AFTER:
            worker.backoff = 0.0
        else:
            worker.backoff = min(max(worker.backoff * 2, RESTART_BACKOFF_FIRST), RESTART_BACKOFF_MAX)
        worker.restart_at = time.monotonic() + worker.backoff

    def _restart_due(self) -> None:
        now = time.monotonic()
        for worker in self._workers:
            if worker.restart_at is not None and worker.restart_at <= now:
                worker.restart_at = None
                self._spawn(worker)
            elif worker.pid and not worker.ready and now - worker.started > START_TIMEOUT:
                log.error("worker %d did not start within %.0f s; killing it", worker.index, START_TIMEOUT)
                worker.error = f"not ready within {START_TIMEOUT:.0f} s"
                os.kill(worker.pid, signal.SIGKILL)

    # Stopping

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signal = self._stop_signal or signum

    def _on_hangup(self, signum: int, frame: FrameType | None) -> None:
        """SIGHUP is for the workers: each reads the token keys again."""
        for worker in self._workers:
            if worker.pid and not self._stopping:
                os.kill(worker.pid, signal.SIGHUP)

    def _on_grace_over(self, signum: int, frame: FrameType | None) -> None:
        self._grace_over = True

    def _stop(self, why: str) -> None:
        self._stopping = True
        alive = [w for w in self._workers if w.pid]
        log.info("%s: stopping %s", why, _plural(len(alive), "worker"))
        # Once each worker closes its copy too (the first step of its drain), the port is
        # closed and new connections are refused, not left in a backlog nobody reads.
        self._close_listeners()
        for worker in alive:
            os.kill(worker.pid, signal.SIGTERM)
        signal.alarm(int(self.config.shutdown_grace) + 5)

    def _kill_remaining(self) -> None:
        for worker in self._workers:
            if worker.pid:
                log.warning("worker %d (pid %d) did not stop in time; killing it", worker.index, worker.pid)
                os.kill(worker.pid, signal.SIGKILL)

    def _close_listeners(self) -> None:
        for sockets in self._listeners:
            for sock in sockets:
                sock.close()

    # Starting a worker

    def _spawn(self, worker: _Worker) -> None:
        if worker.status_fd >= 0:  # a pipe the last worker never closed (it cannot be read from now)
            os.close(worker.status_fd)
            worker.status_fd = -1
        status_read, status_write = os.pipe()
        os.set_blocking(status_read, False)
        seat = LogSeat(worker.index, self.count, self.log_path, self._wake_fds)
        context = WorkerContext(seat, self._epoch, tuple(self._listeners[worker.index]))
        worker.ready = False
        worker.error = ""
        worker.unread = b""
        # Signals wait until the child has its own handlers; the parent's must not run there.
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        supervisor = os.getpid()
        # Every object the parent holds is set aside from the collector's passes, so a
        # worker's collections never write to (and copy) the pages it shares with the
        # parent: with the imports above, 2 MB less of each worker's own memory. Garbage
        # is collected first: frozen, it would never be freed, here or in any worker.
        gc.collect()
        gc.freeze()
        pid = os.fork()
        if pid == 0:
            os.close(status_read)
            self._run_worker(context, status_write, supervisor)
        os.close(status_write)
        worker.pid = pid
        worker.status_fd = status_read
        worker.started = time.monotonic()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _run_worker(self, context: WorkerContext, status_fd: int, supervisor: int) -> None:
        """The child's side of a fork: never returns."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            for signum in (*_SIGNALS, signal.SIGALRM, signal.SIGCHLD):
                signal.signal(signum, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the worker's loop takes it
            stop_with(supervisor)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            for index, sockets in enumerate(self._listeners):
                if index != context.index:
                    for sock in sockets:
                        sock.close()
            serve(self.config, context, lambda: os.write(status_fd, READY))
            code = 0
        except BaseException as exc:
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            log.error("worker %d failed: %s", context.index, reason)
            log.debug("worker %d failed", context.index, exc_info=True)
            try:
                os.write(status_fd, FAILED + reason.encode() + b"\n")
            except OSError:
                pass
        finally:
            logging.shutdown()
            os._exit(code)


def _open_data_directory(config: Config, epoch: str) -> tuple[DataDirectory, str, int]:
    """The data directory, held for the whole group (its workers open the log inside it),
    the epoch of its log (`epoch` for a new one) and the log's last sequence: the workers'
    sequences go on from it. Raises StoreUnusable."""
    assert config.data_dir is not None
    directory = DataDirectory(config.data_dir)
    try:
        store = EventStore(directory.database, Fsync(config.fsync), epoch)
    except BaseException:
        directory.release()
        raise
    store.close()  # never a SQLite connection across fork(): each worker opens its own
    return directory, store.epoch, store.last_sequence


def _import_what_workers_use() -> None:
    """Import, once, in the parent, the modules every worker would otherwise import after
    its fork (the loop, the raw accept path): a module imported before the fork is one copy
    of its pages shared by every worker, not one per worker. Nothing is started: no loop
    exists before a worker's own."""
    import rawsse.reactor.acceptor
    import rawsse.reactor.raw_requests  # noqa: F401

    try:
        import uvloop  # noqa: F401
    except ImportError:  # the stdlib loop, then
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
