# -*- test-case-name: tests.test_redis -*-
"""
This node among its peers: its heartbeat (it stays alive to the others,
finds those that died and forgets their sessions), and the session
directory (which node holds which session: this node's registered as they
open and close, and again whenever it rejoins; the other nodes' counted at
each heartbeat; where a remote session was found, until it goes away).

It knows node ids, endpoint keys and session ids, and runs its scripts
over the link; it never touches events, the bus, replay or calls.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._context import Context, Part
from ._scripts import CLOSED, HEARTBEAT, LEAVE, OPENED, REGISTER
from ._state import LOG_NAMESPACE, encode

__all__ = ["Nodes"]

_log = Logger(namespace=LOG_NAMESPACE)

#: The most remote sessions whose node is remembered.
_OWNERS_KEPT = 100_000


class Nodes(Part):
    """
    Liveness and the session directory, for one node.

    @ivar joined: whether this node registered its sessions on the current
        link.
    @ivar live: the live nodes, at the last heartbeat.
    """

    def __init__(self, context: Context, heartbeat: float, node_ttl: float) -> None:
        """
        @param heartbeat: seconds between heartbeats.
        @param node_ttl: seconds without a heartbeat after which the other
            nodes count this node dead.
        """
        super().__init__(context)
        self._heartbeat = heartbeat
        self._ttl_ms = int(node_ttl * 1000)
        self.joined = False
        self.live: set[str] = set()
        self._heart: LoopingCall | None = None
        self._beat_pending: Deferred[None] | None = None
        self._beat_sent = 0.0
        #: The node holding each remote session this node pushed to.
        self._owners: dict[tuple[str, str], str] = {}

    # The heartbeat

    def start_heartbeat(self) -> None:
        """
        The link is up: beat every C{heartbeat} seconds.
        """
        heart = self._heart = LoopingCall(self._beat)
        heart.clock = self._clock
        heart.start(self._heartbeat, now=False)

    def stop_heartbeat(self) -> None:
        heart, self._heart = self._heart, None
        if heart is not None and heart.running:
            heart.stop()

    def unlink(self) -> None:
        """
        The link is down: no heartbeat, and no longer joined.
        """
        self.joined = False
        self.stop_heartbeat()
        self._beat_pending = None

    def _beat(self) -> None:
        if self._beat_pending is not None:
            # A late answer may be waiting to be read (the reactor was busy);
            # only a silence longer than node_ttl means Redis hangs.
            waited = self._clock.seconds() - self._beat_sent
            if waited < self._ttl_ms / 1000:
                return
            _log.warn(
                "Redis at {url} did not answer for {seconds:.1f} s; reconnecting",
                url=self._link.url,
                seconds=waited,
            )
            self._link.abort()
            return
        self._link.fire(self.beat_once())

    def beat_once(self) -> Deferred[None]:
        """
        Beat now: stay alive, forget dead nodes, count the others' sessions,
        and check that the receiving connection answers too.
        """
        names = self._names
        keys = list(self._endpoints)
        beat = self._link.script(
            HEARTBEAT, [], [names.prefix, names.node_id, self._ttl_ms, *keys]
        )
        checks: list[Deferred[Any]] = [beat.addCallback(self._beaten, keys)]
        ping = self._link.ping_subscriber()
        if ping is not None:
            checks.append(ping)
        pending: Deferred[None] = gatherResults(checks, consumeErrors=True).addCallback(
            lambda _: None
        )
        self._beat_pending = pending
        self._beat_sent = self._clock.seconds()

        def done(result: Any) -> Any:
            if self._beat_pending is pending:
                self._beat_pending = None
            return result

        def unwrap(failure: Failure) -> Failure:
            # gatherResults wraps the first failure; hand on the original.
            if isinstance(failure.value, FirstError):
                first: Failure = failure.value.subFailure
                return first
            return failure

        return pending.addBoth(done).addErrback(unwrap)

    def _beaten(self, result: list[Any], keys: list[str]) -> None:
        live, counts, joined = result
        self.live = {str(node) for node in live}
        if int(joined) and self.joined:
            # The others counted this node dead (no heartbeat for node_ttl)
            # and forgot its sessions.
            _log.warn(
                "Node {node} was counted dead by its peers; registering its"
                " sessions again",
                node=self._names.node_id,
            )
            self.register()
        for key, count in zip(keys, counts, strict=False):
            state = self._endpoints.get(key)
            if state is not None:
                state.others = int(count)
        gone = [k for k, owner in self._owners.items() if owner not in self.live]
        for key, session_id in gone:
            del self._owners[(key, session_id)]
            self._endpoints.remote_session_closed(key, session_id)

    # Joining and leaving

    def register(self) -> None:
        """
        Tell Redis which sessions this node holds, all of them.
        """
        names = self._names
        for key, state in list(self._endpoints.items()):
            self._link.fire(
                self._link.script(
                    REGISTER, [], [names.prefix, names.node_id, key, *state.sessions]
                )
            )

    def leave(self, timeout: float) -> Deferred[None]:
        """
        Leave the cluster: unregister this node and its sessions (give up
        after C{timeout} seconds).  Never fails.
        """
        done: Deferred[None] = self._link.script(
            LEAVE, [], [self._names.prefix, self._names.node_id]
        )
        done.addTimeout(timeout, self._clock)
        done.addErrback(lambda _: None)
        return done

    # This node's sessions

    def session_opened(self, key: str, session_id: str) -> None:
        self._endpoints.state(key).sessions.add(session_id)
        if self.joined:
            names = self._names
            self._link.fire(
                self._link.script(
                    OPENED, [], [names.prefix, names.node_id, key, session_id]
                )
            )

    def session_closed(self, key: str, session_id: str) -> None:
        state = self._endpoints.get(key)
        if state is not None:
            state.sessions.discard(session_id)
        if self.joined:
            names = self._names
            message = {
                "type": "closed",
                "k": key,
                "sid": session_id,
                "o": names.node_id,
            }
            self._link.fire(
                self._link.script(
                    CLOSED,
                    [],
                    [names.prefix, names.node_id, key, session_id, encode(message)],
                )
            )

    def session_count(self, key: str) -> int:
        """
        This node's sessions of C{key}, and the other live nodes' as the
        last heartbeat counted them.
        """
        state = self._endpoints.get(key)
        return 0 if state is None else len(state.sessions) + state.others

    # The other nodes' sessions

    def found(self, key: str, session_id: str, node_id: str) -> None:
        """
        Node C{node_id} holds the remote session C{session_id}: remember it,
        to fail this node's calls to it should that node die.
        """
        owners = self._owners
        owners[(key, session_id)] = node_id
        if len(owners) > _OWNERS_KEPT:
            del owners[next(iter(owners))]

    def gone(self, key: str, session_id: str) -> None:
        """
        The remote session C{session_id} is gone: forget it, and tell its
        endpoint.
        """
        self._owners.pop((key, session_id), None)
        self._endpoints.remote_session_closed(key, session_id)
