# -*- test-case-name: tests.test_redis -*-
"""
Calls between nodes: a push to a session another node holds, a client's
C{POST} forwarded to the node holding its session, a reply settled on the
node whose call it answers, and the answers that come back; each question
waits, with a timer, for its answer or a fallback.

It knows node channels, the messages they carry and the questions waiting
for answers, and finds a session's node through the L{Nodes} directory; it
never touches events, the bus or replay.
"""

from __future__ import annotations

import secrets
from typing import Any, Protocol

from attrs import define, frozen
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._context import Context, Part
from ._nodes import Nodes
from ._scripts import DIRECT
from ._state import LOG_NAMESPACE, encode, error_body

__all__ = ["Peers", "Post", "Reply"]

_log = Logger(namespace=LOG_NAMESPACE)


class _Tuning(Protocol):
    """
    What the calls read of the broker each time: its tunable timeout.
    """

    @property
    def settle_timeout(self) -> float: ...


@frozen
class Post:
    """
    A client's C{POST} for a session this node does not hold, as the
    endpoint hands it on (L{IBroker.forward}).
    """

    key: str
    session_id: str
    body: Any
    header_session: str | None
    principal: Any

    def message(self, rid: str, origin: str) -> dict[str, Any]:
        """
        This C{POST} as request C{rid} of node C{origin}, on the wire.
        """
        return {
            "type": "forward",
            "k": self.key,
            "r": rid,
            "o": origin,
            "sid": self.session_id,
            "b": self.body,
            "h": self.header_session,
            "pr": self.principal,
        }


@frozen
class Reply:
    """
    A client's reply to a call that node C{node_id} made, or every node
    for C{"*"} (L{IBroker.settle}).
    """

    key: str
    node_id: str
    callback_id: str
    session_id: str
    args: Any
    error: tuple[str, str] | None = None

    def message(self, rid: str, origin: str) -> dict[str, Any]:
        """
        This reply as request C{rid} of node C{origin}, on the wire.
        """
        message = {
            "type": "settle",
            "k": self.key,
            "r": rid,
            "o": origin,
            "cid": self.callback_id,
            "sid": self.session_id,
            "a": self.args,
        }
        if self.error is not None:
            message["e"] = list(self.error)
        return message


@define(eq=False)
class _Request:
    """
    A question to another node (a forwarded C{POST} or a reply to settle),
    waiting for its answer.
    """

    deferred: Deferred[Any]
    timer: IDelayedCall
    #: The answer when no answer can come.
    fallback: Any
    #: How many answers to wait for (settle): L{None} until Redis says.
    expected: int | None = None
    answers: int = 0


#: How many times a session no live node holds is asked for again, and
#: how far apart (L{Peers._direct}).
DIRECT_RETRIES = 3
DIRECT_RETRY_DELAY = 0.15


class Peers(Part):
    """
    This node's calls to and from the other nodes.
    """

    def __init__(
        self, context: Context, nodes: Nodes, tuning: _Tuning, forward_timeout: float
    ) -> None:
        """
        @param forward_timeout: seconds a forwarded C{POST} waits for the
            node holding its session.
        """
        super().__init__(context)
        self._nodes = nodes
        self._tuning = tuning
        self._forward_timeout = forward_timeout
        self._requests: dict[str, _Request] = {}

    def received(self, message: dict[str, Any]) -> None:
        """
        C{message} came on this node's channel, or the channel of all.
        """
        node_id = self._names.node_id
        kind = message.get("type")
        if kind == "push":
            self._pushed(message)
        elif kind == "forward":
            self._forwarded(message)
        elif kind == "answer":
            self._answer(str(message.get("r")), (int(message["st"]), message.get("b")))
        elif kind == "settle":
            if message.get("o") != node_id:
                self._settle_here(message)
        elif kind == "settled":
            self._settled(message)
        elif kind == "closed" and message.get("o") != node_id:
            self._nodes.gone(str(message["k"]), str(message["sid"]))
        elif kind == "disconnect" and message.get("o") != node_id:
            self._disconnect_here(message)

    def unlink(self) -> None:
        """
        The link is down: no answer can come; every question gets its
        fallback.
        """
        requests, self._requests = self._requests, {}
        for request in requests.values():
            request.timer.cancel()
            request.deferred.callback(request.fallback)

    # Questions and answers

    def _ask(self, timeout: float, fallback: Any) -> tuple[str, _Request]:
        """
        Open a request to other nodes that answers C{fallback} unless they
        answer within C{timeout} seconds.
        """
        rid = secrets.token_hex(8)
        deferred: Deferred[Any] = Deferred()

        def expire() -> None:
            self._answer(rid, fallback)

        timer = self._clock.callLater(timeout, expire)
        request = self._requests[rid] = _Request(deferred, timer, fallback)
        return rid, request

    def _answer(self, rid: str, result: Any) -> None:
        request = self._requests.pop(rid, None)
        if request is not None:
            if request.timer.active():
                request.timer.cancel()
            request.deferred.callback(result)

    def _direct(
        self, key: str, session_id: str, message: dict[str, Any], tries: int = 0
    ) -> Deferred[Any]:
        """
        Publish C{message} to the node holding C{session_id}: fires with
        C{[node, receivers]}, or L{None} when no live node holds it.

        A session's node registers it as it sends C{setId}, without waiting
        for Redis: a backend told the session id may ask for it here first.
        So a session no live node holds is asked for again, L{DIRECT_RETRIES}
        times L{DIRECT_RETRY_DELAY} apart, before it is taken to be gone.
        """
        sent = self._link.script(
            DIRECT,
            [self._names.key(key, "where")],
            [session_id, self._names.prefix, encode(message)],
        )
        if tries >= DIRECT_RETRIES:
            return sent

        def again(result: Any) -> Any:
            if result is not None or not self._link.up:
                return result
            return deferLater(
                self._clock,
                DIRECT_RETRY_DELAY,
                self._direct,
                key,
                session_id,
                message,
                tries + 1,
            )

        return sent.addCallback(again)

    # Push

    def push(self, key: str, session_id: str, payload: bytes) -> bool:
        """
        Deliver C{payload} to C{session_id} here if this node holds it, else
        to the node that does (while the link is up).

        @return: whether the session may be held somewhere: C{False} only
            while Redis is away and this node does not hold it.
        """
        sink = self._endpoints.sink(key)
        if sink is not None and sink.deliver_to_session(session_id, payload):
            return True
        if not self._link.up:
            return False
        message = {
            "type": "push",
            "k": key,
            "sid": session_id,
            "p": payload.decode("utf-8"),
            "o": self._names.node_id,
        }

        def found(result: Any) -> None:
            if result is None or not int(result[1]):
                self._nodes.gone(key, session_id)
                return
            self._nodes.found(key, session_id, str(result[0]))

        pushed = self._direct(key, session_id, message)
        self._link.fire(pushed.addCallback(found))
        return True

    def _pushed(self, message: dict[str, Any]) -> None:
        key, session_id = str(message["k"]), str(message["sid"])
        sink = self._endpoints.sink(key)
        payload = str(message["p"]).encode("utf-8")
        if sink is not None and sink.deliver_to_session(session_id, payload):
            return
        origin = str(message.get("o", ""))
        if origin:
            reply = {"type": "closed", "k": key, "sid": session_id}
            self._link.fire(self._link.tell(self._names.node_channel(origin), reply))

    # Disconnect

    def disconnect(
        self, key: str, session_id: str | None, subject: str | None
    ) -> Deferred[int]:
        """
        End session C{session_id}'s stream here if this node holds it, else
        on the node that does; or every node's streams of C{subject}.

        @return: a L{Deferred} firing with how many this node ended, plus
            one for a session by id that another node holds.
        """
        sink = self._endpoints.sink(key)
        ended = 0 if sink is None else sink.disconnect_here(session_id, subject)
        if (session_id is not None and ended) or not self._link.up:
            return succeed(ended)
        message = {
            "type": "disconnect",
            "k": key,
            "sid": session_id,
            "sub": subject,
            "o": self._names.node_id,
        }
        if session_id is not None:
            return self._direct(key, session_id, message).addCallbacks(
                lambda found: 0 if found is None or not int(found[1]) else 1,
                lambda _: 0,
            )
        self._link.fire(self._link.tell(self._names.all_channel, message))
        return succeed(ended)

    def _disconnect_here(self, message: dict[str, Any]) -> None:
        sink = self._endpoints.sink(str(message.get("k")))
        if sink is None:
            return
        session_id, subject = message.get("sid"), message.get("sub")
        sink.disconnect_here(
            session_id if isinstance(session_id, str) else None,
            subject if isinstance(subject, str) else None,
        )

    # Forward

    def forward(self, post: Post) -> Deferred[tuple[int, Any]]:
        """
        Hand C{post} to the node holding its session: fires with that
        node's C{(status, body)}, or an error answer when no node holds it,
        it does not answer in time, or Redis is away.
        """
        if not self._link.up:
            return succeed(
                (503, error_body("unavailable", "the cluster cannot be reached"))
            )
        try:
            encode(post.principal)
        except (TypeError, ValueError):
            return succeed(
                (
                    403,
                    error_body(
                        "forbidden",
                        "the caller cannot be named to the node holding the session",
                    ),
                )
            )
        rid, request = self._ask(
            self._forward_timeout,
            (503, error_body("unavailable", "the session's node did not answer")),
        )
        message = post.message(rid, self._names.node_id)

        def found(result: Any) -> None:
            if result is None:
                self._answer(
                    rid, (404, error_body("no_session", "no open session with that id"))
                )
            elif not int(result[1]):
                self._answer(
                    rid,
                    (
                        503,
                        error_body("unavailable", "the session's node is unreachable"),
                    ),
                )

        def failed(failure: Failure) -> None:
            self._answer(
                rid, (503, error_body("unavailable", "the cluster cannot be reached"))
            )

        self._direct(post.key, post.session_id, message).addCallbacks(found, failed)
        result: Deferred[tuple[int, Any]] = request.deferred
        return result

    def _forwarded(self, message: dict[str, Any]) -> None:
        key = str(message["k"])
        origin = self._names.node_channel(str(message["o"]))
        rid = message["r"]
        sink = self._endpoints.sink(key)
        if sink is None:
            answer = {
                "type": "answer",
                "r": rid,
                "st": 404,
                "b": error_body("no_session", "no open session with that id"),
            }
            self._link.fire(self._link.tell(origin, answer))
            return

        def answered(result: tuple[int, Any]) -> None:
            status, body = result
            reply = {"type": "answer", "r": rid, "st": status, "b": body}
            try:
                self._link.fire(self._link.tell(origin, reply))
            except (TypeError, ValueError):
                reply["st"] = 500
                reply["b"] = error_body("route_failed", "the result is not JSON")
                self._link.fire(self._link.tell(origin, reply))

        maybeDeferred(
            sink.handle_forwarded, message.get("b"), message.get("h"), message.get("pr")
        ).addCallback(answered).addErrback(
            lambda failure: _log.failure(
                "Answering a forwarded call failed", failure=failure
            )
        )

    # Settle

    def settle(self, reply: Reply) -> Deferred[bool]:
        """
        Hand C{reply} to the node whose call it answers (every other node,
        for C{"*"}): fires with whether one settled it, C{False} once none
        did, none answered in time, or Redis is away.
        """
        if not self._link.up:
            return succeed(False)
        rid, request = self._ask(self._tuning.settle_timeout, False)
        names = self._names
        message = reply.message(rid, names.node_id)
        everyone = reply.node_id == "*"
        channel = names.all_channel if everyone else names.node_channel(reply.node_id)

        def published(receivers: Any) -> None:
            # Every node hears a message to all, this one included.
            request.expected = int(receivers) - (1 if everyone else 0)
            if request.answers >= request.expected:
                self._answer(rid, False)

        def failed(failure: Failure) -> None:
            self._answer(rid, False)

        try:
            self._link.tell(channel, message).addCallbacks(published, failed)
        except (TypeError, ValueError):
            self._answer(rid, False)
        result: Deferred[bool] = request.deferred
        return result

    def _settle_here(self, message: dict[str, Any]) -> None:
        sink = self._endpoints.sink(str(message["k"]))
        ok = False
        error = message.get("e")
        if sink is not None:
            try:
                ok = bool(
                    sink.settle_forwarded(
                        str(message["cid"]),
                        str(message["sid"]),
                        message.get("a"),
                        (str(error[0]), str(error[1])) if error else None,
                    )
                )
            except Exception:
                _log.failure("Settling a forwarded reply failed")
        reply = {"type": "settled", "r": message["r"], "ok": ok}
        self._link.fire(
            self._link.tell(self._names.node_channel(str(message["o"])), reply)
        )

    def _settled(self, message: dict[str, Any]) -> None:
        rid = str(message.get("r"))
        request = self._requests.get(rid)
        if request is None:
            return
        if message.get("ok"):
            self._answer(rid, True)
            return
        request.answers += 1
        if request.expected is not None and request.answers >= request.expected:
            self._answer(rid, False)
