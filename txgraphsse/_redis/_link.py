# -*- test-case-name: tests.test_redis -*-
"""
The link to Redis: two connections (one sends every command, in order; one
receives the bus and this node's messages), made, logged in, kept and made
again with a growing delay whenever they are lost, and the way every other
part sends a command or a script through them.

It knows the URL, the connections and the scripts to load; what the link
coming up, going down or bringing a message means is its owner's
(L{_LinkOwner}): it never touches endpoint state, events, sessions or
calls.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    FirstError,
    fail,
    gatherResults,
    succeed,
)
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from txredisapi import ConnectionError as RedisConnectionError
from txredisapi import ResponseError

from ._protocol import Command, Subscriber, command_protocol, subscriber_protocol
from ._scripts import SCRIPTS, Script
from ._state import LOG_NAMESPACE, Names, encode

__all__ = ["Link"]

_log = Logger(namespace=LOG_NAMESPACE)


class _LinkOwner(Protocol):
    """
    What the link needs of whoever uses it (the broker): its timings, and
    what to do as the link comes up, goes down or brings a message.
    """

    @property
    def reconnect_initial(self) -> float: ...

    @property
    def reconnect_max(self) -> float: ...

    @property
    def connect_timeout(self) -> float: ...

    def _received(self, channel: str, raw: Any) -> None:
        """
        A message arrived on C{channel}.
        """

    async def _joining(self) -> None:
        """
        Both connections are open, logged in and subscribed to this node's
        channels, and the scripts are loaded: join the cluster.
        """

    def _linked(self) -> tuple[int, int]:
        """
        The link is up.

        @return: how many events kept through the outage were written now,
            and how many were lost (for the log).
        """

    def _stopping(self, leave: bool) -> Deferred[None]:
        """
        The link is about to close for good (C{leave}: politely); fire once
        what must be said first is said.
        """

    def _unlinked(self) -> None:
        """
        The link is down: answer everything that waited for it.
        """


class Link:
    """
    The two connections to one Redis.

    @ivar up: whether the link is up (this node is linked to its peers).
    @ivar running: whether it is kept up (between L{start} and
        L{shutdown}).
    """

    def __init__(
        self, clock: IReactorTime, url: str, names: Names, owner: _LinkOwner
    ) -> None:
        """
        @param url: C{redis://[user:password@]host[:port][/db]}.
        @raise ValueError: C{url} is not a C{redis://} URL.
        """
        parts = urlsplit(url)
        if parts.scheme != "redis":
            raise ValueError(f"not a redis:// URL: {url!r}")
        self._clock = clock
        self.url = url
        self._names = names
        self._owner = owner
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        db = parts.path.strip("/")
        self._db = int(db) if db else 0
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self.running = False
        self.up = False
        self._cmd: Command | None = None
        self._sub: Subscriber | None = None
        self._attempt: Deferred[None] | None = None
        self._retry: IDelayedCall | None = None
        self._failures = 0
        self._down_since: float | None = None
        self._ever_up = False
        self._started: list[Deferred[None]] = []

    @property
    def subscriber(self) -> Subscriber | None:
        """
        The connection that receives, while it is open.
        """
        return self._sub

    # Start and stop

    def start(self) -> Deferred[None]:
        """
        Connect, and keep reconnecting whenever the link is lost.

        @return: a L{Deferred} that fires once the link is first up (or
            when L{shutdown} is called first); it never fails.
        """
        waiting: Deferred[None] = Deferred()
        if self.up:
            waiting.callback(None)
        else:
            self._started.append(waiting)
        if not self.running:
            self.running = True
            self._connect()
        return waiting

    def shutdown(self, leave: bool) -> Deferred[None]:
        """
        Stop keeping the link up, and close it: politely if C{leave}, else
        at once, as a crash would look to Redis.
        """
        if not self.running:
            return succeed(None)
        self.running = False
        retry, self._retry = self._retry, None
        if retry is not None and retry.active():
            retry.cancel()
        if self._attempt is not None:
            self._attempt.cancel()
        started, self._started = self._started, []
        for waiting in started:
            waiting.callback(None)
        done = self._owner._stopping(leave)

        def close(_: object) -> Deferred[None]:
            cmd, sub = self._cmd, self._sub
            self._cmd = self._sub = None
            self._teardown()
            closing = []
            for proto in (cmd, sub):
                if proto is not None and proto.transport is not None:
                    closing.append(proto.whenDisconnected())
                    if leave:
                        proto.transport.loseConnection()
                    else:
                        proto.transport.abortConnection()
            return gatherResults(closing).addBoth(lambda _: None)

        return done.addBoth(close)

    def abort(self) -> None:
        """
        Drop both connections at once (Redis hangs): the link goes down,
        and is made again.
        """
        for proto in (self._cmd, self._sub):
            if proto is not None and proto.transport is not None:
                proto.transport.abortConnection()

    # Making the link

    def _endpoint(self) -> HostnameEndpoint:
        return HostnameEndpoint(
            self._clock, self._host, self._port, timeout=self._owner.connect_timeout
        )

    def _connect(self) -> None:
        self._retry = None
        attempt = self._attempt = Deferred.fromCoroutine(self._open_link())
        attempt.addTimeout(2 * self._owner.connect_timeout, self._clock)
        attempt.addCallbacks(self._linked, self._link_failed)

    async def _login(self, proto: Command | Subscriber, select: bool) -> None:
        if self._password is not None:
            if self._username is not None:
                await proto.execute_command("AUTH", self._username, self._password)
            else:
                await proto.execute_command("AUTH", self._password)
        if select and self._db:
            await proto.execute_command("SELECT", self._db)

    async def _open_link(self) -> None:
        cmd = await connectProtocol(self._endpoint(), command_protocol(self))
        self._cmd = cmd
        await self._login(cmd, select=True)
        sub = await connectProtocol(self._endpoint(), subscriber_protocol(self))
        self._sub = sub
        await self._login(sub, select=False)
        await gatherResults(
            [cmd.execute_command("SCRIPT", "LOAD", s.text) for s in SCRIPTS],
            consumeErrors=True,
        )
        await sub.subscribe(self._names.own_channel)
        await sub.subscribe(self._names.all_channel)
        await self._owner._joining()

    def _linked(self, _: object) -> None:
        self._attempt = None
        self._failures = 0
        written, dropped = self._owner._linked()
        self.up = True
        if self._down_since is not None:
            _log.info(
                "Redis at {url} is back after {seconds:.1f} s: wrote {written}"
                " events kept meanwhile, lost {dropped}",
                url=self.url,
                seconds=self._clock.seconds() - self._down_since,
                written=written,
                dropped=dropped,
            )
        elif not self._ever_up:
            _log.info(
                "Linked to Redis at {url} as node {node}",
                url=self.url,
                node=self._names.node_id,
            )
        self._down_since = None
        self._ever_up = True
        started, self._started = self._started, []
        for waiting in started:
            waiting.callback(None)

    def _link_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, FirstError):
            failure = failure.value.subFailure
        self._attempt = None
        cmd, sub = self._cmd, self._sub
        self._cmd = self._sub = None
        for proto in (cmd, sub):
            if proto is not None and proto.transport is not None:
                proto.transport.abortConnection()
        self._teardown()
        if not self.running:
            return
        if self._down_since is None:
            self._down_since = self._clock.seconds()
            _log.warn(
                "Redis at {url} is unreachable ({why}); serving this node's"
                " sessions only, and retrying",
                url=self.url,
                why=failure.getErrorMessage() or type(failure.value).__name__,
            )
        owner = self._owner
        delay = min(owner.reconnect_max, owner.reconnect_initial * 2**self._failures)
        self._failures = min(self._failures + 1, 30)
        self._retry = self._clock.callLater(
            delay * random.uniform(0.8, 1.2), self._connect
        )

    # What the connections say

    def received(self, channel: str, message: Any) -> None:
        """
        A message arrived on C{channel} (the receiving connection's
        C{messageReceived}): its owner's to handle.
        """
        self._owner._received(channel, message)

    def lost(self, proto: object) -> None:
        """
        A connection closed (C{proto}'s C{connectionLost}).
        """
        if proto is self._cmd:
            self._cmd = None
        elif proto is self._sub:
            self._sub = None
        else:
            return
        if self._attempt is not None:
            self._attempt.cancel()
            return
        if not self.up:
            return
        _log.warn(
            "Lost Redis at {url}; serving this node's sessions only, and reconnecting",
            url=self.url,
        )
        self._down_since = self._clock.seconds()
        self._link_failed(Failure(RedisConnectionError("connection lost")))

    def _teardown(self) -> None:
        self.up = False
        self._owner._unlinked()

    # Sending commands

    def call(self, *args: Any) -> Deferred[Any]:
        """
        Send one command on the command connection.
        """
        cmd = self._cmd
        if cmd is None:
            return fail(RedisConnectionError("Not connected"))
        try:
            result: Deferred[Any] = cmd.execute_command(*args)
        except Exception:
            return fail()
        return result

    def script(
        self, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Deferred[Any]:
        """
        Run C{script} by its SHA1, or by its text if Redis lost it.
        """

        def missing(failure: Failure) -> Any:
            if failure.check(ResponseError) and str(failure.value).startswith(
                "NOSCRIPT"
            ):
                return self.call("EVAL", script.text, len(keys), *keys, *args)
            return failure

        return self.call("EVALSHA", script.sha, len(keys), *keys, *args).addErrback(
            missing
        )

    def tell(self, channel: str, message: dict[str, Any]) -> Deferred[Any]:
        """
        Publish C{message}, as JSON, on C{channel}.
        """
        return self.call("PUBLISH", channel, encode(message))

    def fire(self, result: Deferred[Any]) -> None:
        """
        Send and forget: log what fails, except a lost link.
        """

        def failed(failure: Failure) -> None:
            if not failure.check(RedisConnectionError, CancelledError):
                _log.failure("A Redis command failed", failure=failure)

        result.addErrback(failed)

    def ping_subscriber(self) -> Deferred[Any] | None:
        """
        C{PING} on the receiving connection, if it is connected: whether it
        still answers.
        """
        sub = self._sub
        if sub is not None and sub.connected:
            ping: Deferred[Any] = sub.execute_command("PING")
            return ping
        return None

    def subscribe(self, channel: str) -> Deferred[Any]:
        """
        Subscribe the receiving connection to C{channel}: fires once Redis
        confirms.
        """
        sub = self._sub
        if sub is None:
            return fail(RedisConnectionError("Not connected"))
        try:
            confirmed: Deferred[Any] = sub.subscribe(channel)
        except RedisConnectionError:
            return fail()
        return confirmed

    def unsubscribe(self, channel: str) -> None:
        """
        Unsubscribe from C{channel}, if the receiving connection is open.
        """
        if self._sub is not None:
            with contextlib.suppress(RedisConnectionError):
                self.fire(self._sub.unsubscribe(channel))
