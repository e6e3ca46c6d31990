"""The server: binds the listener, builds every part (the one composition root,
`_start_serving`), runs the once-a-second sweep, publishes for embedding code, and shuts
down gracefully. One piece, though long: the embedding API (`Server`) is its life from
start to stop, and the composition root is read best beside it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rawsse.auth.app import AnswerCache
from rawsse.auth.keys import KeyRing
from rawsse.auth.ledger import Ledger
from rawsse.auth.tokens import Key, TokenVerifier
from rawsse.broker.base import Broker, BrokerNeeds
from rawsse.broker.memory import Durability, MemoryBroker
from rawsse.config import FD_RESERVE, Config
from rawsse.core.access import Access
from rawsse.core.acks import AckBook, NoAcks
from rawsse.core.api import Api, ServerView
from rawsse.core.connection import Timeouts
from rawsse.core.events import EventEncoder
from rawsse.core.history import History
from rawsse.core.http import HttpLimits
from rawsse.core.hub import Hub
from rawsse.core.ids import EpochIds, IdScheme, StreamIds, new_epoch
from rawsse.core.metrics import Metrics
from rawsse.core.presence import local_tally
from rawsse.core.publish import make_item
from rawsse.core.slots import SlotTable
from rawsse.core.sse import encode_retry
from rawsse.core.state import ServerState
from rawsse.core.subscriptions import Subscriptions, TopicInterest
from rawsse.core.ws.session import SHUTDOWN_FRAME, SessionLimits, Sessions
from rawsse.dashboard.files import load_dashboard
from rawsse.dashboard.stats import StatsPublisher
from rawsse.errors import ConfigError
from rawsse.poller import available_poller, make_poller
from rawsse.preflight import check_environment
from rawsse.reactor.allocator import Trimmer
from rawsse.reactor.app_client import AUTH_WAITING_PER_CONNECTION, AppClient
from rawsse.reactor.context import ConnectionContext
from rawsse.reactor.effects import EffectRunner, Publishing
from rawsse.reactor.fd_streams import FdBackend
from rawsse.reactor.intake import Intake
from rawsse.reactor.listeners import listen
from rawsse.reactor.presence import PresenceBoard, PresenceEvents
from rawsse.reactor.process_figures import ProcessFigures
from rawsse.reactor.protocol import HttpProtocol
from rawsse.reactor.streams import StreamLimits, build_streams
from rawsse.reactor.transport_streams import TransportBackend
from rawsse.store.acks import StoredAcks
from rawsse.store.durable import PRELOAD_BYTES, DurableLog, HistoryWindow, StoreOptions
from rawsse.store.events import EventStore, Fsync

if TYPE_CHECKING:  # POSIX parts (the workers, the data directory): imported only where used
    from rawsse.broker.ring import SharedLog
    from rawsse.process.context import WorkerContext
    from rawsse.reactor.acceptor import Acceptor
    from rawsse.reactor.raw_requests import RawRequests
    from rawsse.store.directory import DataDirectory

log = logging.getLogger("rawsse")

SWEEP_INTERVAL = 1.0
"""Timeouts and heartbeats are checked by one sweep a second, not a timer per connection."""

SHED_MIN = 32
SHED_MAX = 4096
"""Connections over --max-connections answered "come back later" at one time: at least
half of FD_RESERVE, more when the limit leaves descriptors to spare. Beyond them a
connection is dropped unanswered (see HttpProtocol.connection_made)."""

DRAIN_RETRY_CHOICES = 16
"""Distinct reconnection delays handed out on drain: enough to spread the clients' return
over the spread, few enough that each is one shared bytes object."""

MAX_SLOTS = 1 << 20
"""Slot arrays are sized by the fd limit; an 'unlimited' limit is read as a million."""


UNKNOWN_FD_LIMIT = 8192
"""Slots where the platform says nothing of its open-files limit (no `resource` module)."""


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the soft limit in force."""
    try:
        import resource  # POSIX only
    except ImportError:
        return UNKNOWN_FD_LIMIT
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > MAX_SLOTS:
        hard = MAX_SLOTS
    if soft == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return min(soft, MAX_SLOTS)


class Server:
    """An embeddable rawsse server.

    server = Server(Config(port=8080))
    await server.start()
    server.publish("news", "hello")
    ...
    await server.stop()
    """

    def __init__(
        self,
        config: Config | None = None,
        worker: WorkerContext | None = None,
        *,
        wall: Callable[[], float] = time.time,
        **options: Any,
    ) -> None:
        self.config = Config(**options) if config is None else config
        self.worker = worker
        self.state = ServerState()
        self._data_directory: DataDirectory | None = None
        """The --data-dir held while this server runs (its lock), released at stop."""
        self._wall = wall
        """The wall clock that token expiry is read on (a test gives a fake one)."""
        self.metrics = Metrics()
        self._listeners: list[asyncio.Server | Acceptor] = []
        """What accepts: the raw path for the fd backend, the loop's servers for transports."""
        self._raw: RawRequests | None = None
        self._port = 0
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopped: asyncio.Event | None = None
        self._next_heartbeat = 0.0
        self._rng = random.Random()
        self._trimmer = Trimmer()
        self._figures = ProcessFigures()
        self._app_client: AppClient | None = None

    # Start and stop

    async def start(self) -> None:
        config = self.config
        keys = check_environment(config)  # what the options need from this machine, before anything
        self.loop = asyncio.get_running_loop()
        fd_limit = raise_fd_limit()
        # A worker serves the sockets its supervisor bound for the port; a single process
        # binds its own, first of all, so that a port in use is refused before a broker
        # connects or history loads (see rawsse.reactor.listeners).
        given = self.worker.listeners if self.worker else ()
        sockets = list(given) or listen(config.host, config.port, config.backlog)
        try:
            await self._start_serving(fd_limit, sockets, keys)
        except BaseException:
            if getattr(self, "broker", None) is not None:
                await self.broker.stop()
            self._release_data_directory()
            if getattr(self, "streams", None) is not None:
                self.streams.close_all()
            if not given:
                for sock in sockets:
                    sock.close()
            raise
        self._next_heartbeat = self.loop.time() + config.heartbeat
        self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
        self._trimmer.trim_now(self.loop.time())

    async def _start_serving(
        self, fd_limit: int, sockets: list[socket.socket], keys: tuple[Key, ...]
    ) -> None:
        """The composition root: every part is built here, in the order of what it needs,
        and handed its collaborators in its constructor. Two parts report to parts built
        after them, and are given those when they start, last: the broker its sink (its
        sink's process publishes through it), the stream backend what it reports to (the
        streams it holds, the acceptor it feeds)."""
        config, loop, metrics = self.config, self.loop, self.metrics
        history = History(config.history, config.history_age, config.history_bytes)
        remote = config.broker != "memory"
        # The durable log of --data-dir holds the epoch, so that ids outlive the process.
        store = self._open_store() if config.data_dir else None
        epoch = store.epoch if store else self.worker.epoch if self.worker else None
        ids: IdScheme = StreamIds() if remote else EpochIds(epoch)
        # One encoder of the ids' scheme, for the broker and for replays from the durable log.
        encoder = EventEncoder(ids, config.max_pending_bytes)
        durable = None
        if store is not None:
            fsync = Fsync(config.fsync)
            options = StoreOptions(fsync, config.fsync_interval, config.store_age, config.store_bytes)
            # One process syncs, trims and counts: this one, or worker 0 of a group.
            keeper = self.worker is None or self.worker.index == 0
            durable = DurableLog(store, options, encoder, metrics, keeper, shared=self.worker is not None)
        # The workers' shared log (with a Redis broker the workers are nodes, and use none):
        # the broker's, and where this worker's streams' topics are shown to the others.
        shared_log: SharedLog | None = None
        interest: TopicInterest | None = None
        if not remote and self.worker is not None:
            from rawsse.broker.ring import SharedLog  # shared memory (POSIX), as the workers
            from rawsse.broker.workers import SharedInterest

            shared_log = SharedLog(self.worker.seat.log_path)
            seat = self.worker.seat
            interest = SharedInterest(shared_log, seat.index, seat.wake_fds[seat.index])
        self.hub = hub = Hub(
            Subscriptions(fd_limit, interest),
            history,
            metrics,
            config.max_queued_bytes,
            ids=ids,
            archive=durable,
        )
        capacity = hub.subscriptions.capacity
        # Where private topics' acknowledgements are kept: next to the events they name.
        self._acks = acks = self._make_acks(store, hub)
        self.access = access = self._make_access(capacity, keys)
        session_limits = SessionLimits(config.max_topics, config.max_topic_length, config.max_body_bytes)
        sessions = Sessions(
            capacity, session_limits, loop.time, self.state, access=access if access.enabled else None
        )
        columns = (hub.subscriptions, sessions, access.ledger)
        table = SlotTable(capacity, config.max_pending_bytes, columns)
        backend = self._make_backend(table)
        self._app_client = app = self._make_app_client()
        self.broker = broker = self._make_broker(hub, encoder, shared_log, durable)
        self._publishing = publishing = Publishing(broker, metrics)
        local = functools.partial(local_tally, hub.subscriptions, access.ledger.sub)
        presence = PresenceBoard(loop, publishing.put_words, broker.process_count, local, self._wall)
        self.streams = streams = build_streams(
            loop,
            hub,
            metrics,
            StreamLimits(config.send_timeout, config.fanout_slice),
            table,
            backend,
            sessions,
            publishing.publish_ws,
            broker.catch_up,
            presence.on_word,
            access.ledger,
            self._wall,
            None if app is None else app.ask,
            # The server's own events, not a publisher's: not counted as publishes.
            PresenceEvents(config.parsed.presence_events, publishing.put_words),
            acks,
        )
        await broker.start(Intake(hub, streams.fanout, streams.registry))
        view = ServerView(
            broker.worker_label,
            broker.shares_order,
            broker.unready_reason,
            self._metrics_text,
            broker.catch_up,
        )
        static = load_dashboard() if config.dashboard else None
        self.api = Api(
            config.api_options(), hub, metrics, view, static, loop.time, self._rng, access, self.state, acks
        )
        connection_limit = config.connection_limit(fd_limit)
        # The descriptors left above the limit, less what the listener, pollers and logs
        # need, hold the connections answered "come back later".
        spare = fd_limit - connection_limit - FD_RESERVE // 2
        self.context = ConnectionContext(
            api=self.api,
            runner=EffectRunner(publishing, hub, streams.close_topics, loop, presence, acks, app),
            streams=streams,
            metrics=metrics,
            limits=HttpLimits(config.max_header_bytes, config.max_url_bytes, config.max_body_bytes),
            timeouts=Timeouts(
                config.header_timeout, config.body_timeout, config.keepalive_timeout, config.send_timeout
            ),
            clock=loop.time,
            connection_limit=connection_limit,
            shed_capacity=min(max(spare, SHED_MIN), SHED_MAX),
        )
        worker_index = self.worker.index if self.worker else 0
        self.stats = (
            StatsPublisher(broker, hub.subscriptions, metrics, loop.time(), worker_index)
            if config.dashboard
            else None
        )
        self._stopped = asyncio.Event()
        if isinstance(backend, FdBackend):
            from rawsse.reactor.acceptor import Acceptor  # POSIX (fcntl), as the fd backend
            from rawsse.reactor.raw_requests import RawRequests

            self._raw = raw = RawRequests(loop, self.context, backend)
            backend.start(streams, raw)
            self._listeners = [Acceptor(loop, sockets, self.context, backend, raw)]
        else:
            backend.start(streams)
            factory = functools.partial(HttpProtocol, self.context)
            self._listeners = [
                await loop.create_server(factory, sock=sock, backlog=config.backlog) for sock in sockets
            ]
        self._port = sockets[0].getsockname()[1]

    def _make_broker(
        self, hub: Hub, encoder: EventEncoder, shared_log: SharedLog | None, durable: DurableLog | None
    ) -> Broker:
        """The broker the options name, given what it needs: an encoder of the hub's id
        scheme (events no larger than a stream may hold while behind), a clock, and the
        room the hub's queue has (the hub is a Room)."""
        config = self.config
        url = config.broker
        # The loop's clock, but precise (uvloop's counts whole milliseconds): the fan-out
        # times each event from it.
        needs = BrokerNeeds(encoder, time.monotonic, hub)
        if url != "memory":
            from rawsse.broker.redis import RedisBroker  # needs the redis extra

            return RedisBroker(needs, url, config.broker_history, self.loop)
        if self.worker is not None:
            from rawsse.broker.workers import WorkerBroker  # shared memory and eventfds

            assert shared_log is not None
            seat = self.worker.seat
            return WorkerBroker(needs, self.metrics.shared_values, seat, shared_log, self.loop, durable)
        if durable is None:
            return MemoryBroker(needs)
        window = HistoryWindow(min(config.history_bytes, PRELOAD_BYTES), config.history_age)
        return MemoryBroker(needs, Durability(durable, window, self.loop))

    def _make_acks(self, store: EventStore | None, hub: Hub) -> AckBook:
        if store is not None:
            return StoredAcks(store, self.metrics)
        if self.config.broker != "memory":
            from rawsse.broker.redis_acks import RedisAcks  # needs the redis extra

            return RedisAcks(self.config.broker, hub.ids, hub, self.metrics, self.loop)
        return NoAcks()

    def _open_store(self) -> EventStore:
        """The data directory, held while this server runs, and its durable log (a
        worker's: its supervisor holds the directory and made the log). Raises
        StoreUnusable."""
        from rawsse.store.directory import DATABASE_NAME, DataDirectory  # flock: POSIX

        data_dir, fsync = self.config.data_dir, Fsync(self.config.fsync)
        assert data_dir is not None
        if self.worker is not None:
            return EventStore(os.path.join(data_dir, DATABASE_NAME), fsync, self.worker.epoch)
        self._data_directory = directory = DataDirectory(data_dir)
        try:
            return EventStore(directory.database, fsync, new_epoch())
        except BaseException:
            directory.release()
            self._data_directory = None
            raise

    def _make_backend(self, table: SlotTable) -> FdBackend | TransportBackend:
        kind = self.config.streams
        if kind == "auto":
            kind = available_poller() or "transport"
        self.streams_kind = kind
        if kind == "transport":
            return TransportBackend(self.loop, table)
        return FdBackend(self.loop, table, make_poller(kind))

    def _make_access(self, capacity: int, keys: tuple[Key, ...]) -> Access:
        """Access to topics, checked with `keys` (as the preflight read them: SIGHUP reads
        the files again)."""
        config = self.config
        options = config.access_options()
        verifier = None
        if config.tokens_on:
            verifier = TokenVerifier(KeyRing(config.key_sources(), keys), config.token_options())
        app_cache = AnswerCache(config.auth_cache) if config.auth_url else None
        # Without credentials or limits nothing is held per stream: the ledger stays empty.
        needed = verifier is not None or app_cache is not None or bool(options.max_streams_per_ip)
        ledger = Ledger(
            capacity if needed else 0, bool(options.max_streams_per_user), bool(options.max_streams_per_ip)
        )
        return Access(options, verifier, ledger, self._wall, app_cache)

    def _make_app_client(self) -> AppClient | None:
        config = self.config
        if config.auth_url is None:
            return None
        waiting = config.auth_connections * AUTH_WAITING_PER_CONNECTION
        return AppClient(config.auth_url, config.auth_connections, config.auth_timeout, waiting)

    def reload_keys(self) -> None:
        """Read the token keys again (SIGHUP); the keys in force stay if that fails."""
        verifier = self.access.verifier
        if verifier is None:
            return
        try:
            verifier.reload()
        except ConfigError as exc:
            log.error("keeping the token keys in force: %s", exc)
            return
        log.info("token keys reloaded")

    @property
    def port(self) -> int:
        """The port served (the one picked, for port 0)."""
        assert self._port, "start() first"
        return self._port

    @property
    def connection_count(self) -> int:
        return self.context.connection_count

    @property
    def raw_connections(self) -> int:
        """Connections whose requests are read and answered on the raw path now."""
        return 0 if self._raw is None else self._raw.count

    @property
    def connection_limit(self) -> int:
        return self.context.connection_limit

    def _metrics_text(self) -> bytes:
        return self.metrics.render(self.broker.worker_metrics())

    def _release_data_directory(self) -> None:
        if self._data_directory is not None:
            self._data_directory.release()
            self._data_directory = None

    async def serve_forever(self) -> None:
        """Wait until stop() is called (by a signal handler, say)."""
        assert self._stopped is not None, "start() first"
        await self._stopped.wait()

    async def stop(self) -> None:
        """Stop accepting, tell every stream to reconnect after a jittered delay (so the
        clients come back spread out), let the running fan-out finish and pending bytes
        drain for up to `shutdown_grace` seconds, then close every stream and connection."""
        if not self._listeners:
            return
        for listener in self._listeners:
            listener.close()
        self._listeners = []
        if self._sweeper is not None:
            self._sweeper.cancel()
        self.state.draining = True
        self.streams.announce(self.hub.spread(self._reconnect_advice(), self._rng.randrange))
        self.streams.close_websockets(SHUTDOWN_FRAME)
        flushed = await self.streams.drain(self.config.shutdown_grace)
        if not flushed:
            log.warning("shutdown grace ran out with bytes still pending; closing anyway")
        if self._raw is not None:
            self._raw.close_all()  # while the backend's poller still watches them
        self.streams.close_all()
        for connection in list(self.context.connections):
            connection.close_now()
        await self.broker.stop()
        await self._acks.close()
        self._release_data_directory()
        if self._app_client is not None:
            await self._app_client.close()
        assert self._stopped is not None
        self._stopped.set()

    def _reconnect_advice(self) -> list[bytes]:
        """`retry:` lines spaced evenly over [retry, retry + retry_spread]; each stream
        draws one at random."""
        config = self.config
        step = config.retry_spread * 1000 / DRAIN_RETRY_CHOICES
        return [encode_retry(config.retry + round(step * (n + 0.5))) for n in range(DRAIN_RETRY_CHOICES)]

    # Publishing from embedding code

    def publish(self, topics: str | Sequence[str], data: str, event: str | None = None) -> str:
        """Publish one event from the loop's thread; returns its id. Raises ValueError for
        an invalid topic or event name or an event larger than `max_pending_bytes`
        encoded, and rawsse.Overloaded when the fan-out is behind. With a Redis broker,
        publish over HTTP (the id comes back from Redis, after a round trip)."""
        if self.config.broker != "memory":
            raise RuntimeError("with a Redis broker, publish through POST /publish")
        names = [topics] if isinstance(topics, str) else list(topics)
        item = make_item(names, data, event, self.config.max_topic_length)  # ValueErrors
        return self._publishing.publish_now([item])[0]

    def publish_threadsafe(
        self, topics: str | Sequence[str], data: str, event: str | None = None
    ) -> concurrent.futures.Future[str]:
        """Publish from any thread; the future gets the event id (or the exception)."""
        future: concurrent.futures.Future[str] = concurrent.futures.Future()

        def publish() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(self.publish(topics, data, event))
            except Exception as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(publish)
        return future

    # The once-a-second sweep

    def _sweep(self) -> None:
        now = self.loop.time()
        try:
            for connection in [c for c in self.context.connections if c.deadline <= now]:
                connection.on_timeout(now)
            if self._raw is not None:
                self._raw.sweep(now)
            self.streams.sweep(now)
            self.hub.history.expire(now)
            self._figures.sample(self.metrics, now)  # before the broker shares them
            self.broker.sweep()
            if now >= self._next_heartbeat:
                self._next_heartbeat = now + self.config.heartbeat
                self.streams.heartbeat()
            if self.stats is not None:
                self.stats.publish(now)
            self._trimmer.sweep(self.metrics.streams_opened + self.metrics.streams_closed, now)
        finally:
            self._sweeper = self.loop.call_later(SWEEP_INTERVAL, self._sweep)
