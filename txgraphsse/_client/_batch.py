# -*- test-case-name: tests.test_client_batch -*-
"""
The C{POST}s of one connection, coalesced: what is posted in one reactor
turn, for one session, goes out as one C{POST} whose body is the array of
those messages (PROTOCOL.md's batches), and each message's answer, an
entry of the array that comes back, settles its own L{Deferred}.

This module owns that coalescing: when a batch goes out (the turn after its
first message), how big one may be, and how an entry becomes an answer or a
L{RemoteError}.  A message alone in its turn goes out as it is, so that a
server that takes no batches (graphscript's own) still understands it.  It
knows the wire of one C{POST} through L{post_payload}, and nothing of
streams, routes or sessions beyond the id it quotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from ._http import RemoteError, entry_error, set_header
from ._post import Poster, encode, post_payload

__all__ = ["Batcher"]


class _Message:
    """
    One message waiting for its batch, or in one that is out.
    """

    __slots__ = ("batch", "done", "payload")

    def __init__(self, payload: bytes, done: Deferred[Any]) -> None:
        self.payload = payload
        self.done = done
        self.batch: _Batch | None = None


class _Batch:
    """
    The messages of one C{POST} that is out, and how many of them still
    wait for it: when none does, the C{POST} is cancelled.
    """

    __slots__ = ("request", "waiting")

    def __init__(self, size: int) -> None:
        self.waiting = size
        self.request: Deferred[Any] | None = None


class Batcher:
    """
    The C{POST}s of one connection to C{url}.

    @ivar max_batch: the most messages in one C{POST} (the server refuses
        a batch over its own C{max_batch}, 100 by default).
    @ivar max_bytes: the most bytes of messages in one C{POST} (a message
        larger than that goes alone): under the server's C{max_body}.
    """

    def __init__(
        self,
        client: Poster,
        url: str,
        headers: Mapping[str, str],
        max_batch: int = 100,
        max_bytes: int = 256 << 10,
    ) -> None:
        self._client = client
        self._url = url
        self._headers = dict(headers)
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self._queued: dict[str, list[_Message]] = {}
        self._flush: IDelayedCall | None = None

    def set_header(self, name: str, value: str) -> None:
        """
        Send C{name: value} with the next C{POST}s, in place of any header
        of that name.
        """
        set_header(self._headers, name, value)

    def post(self, body: Any, session_id: str) -> Deferred[Any]:
        """
        C{POST} C{body} as JSON for session C{session_id}, with what else is
        posted in this turn.

        @return: a L{Deferred} firing with the answer's JSON value (L{None}
            for an empty answer); failing with L{RemoteError} for a
            refusal, at once for a body that is not JSON.  Cancelling it
            takes the message out of its batch if that is not out yet, and
            cancels the batch's C{POST} once no message waits for it.
        """
        try:
            payload = encode(body)
        except (TypeError, ValueError):
            return fail()
        message = _Message(
            payload, Deferred(lambda _: self._cancel(message, session_id))
        )
        self._queued.setdefault(session_id, []).append(message)
        if self._flush is None:
            self._flush = self._client._reactor.callLater(0, self._send_queued)
        return message.done

    def _cancel(self, message: _Message, session_id: str) -> None:
        batch = message.batch
        if batch is None:
            queued = self._queued.get(session_id, [])
            if message in queued:
                queued.remove(message)
            return
        batch.waiting -= 1
        if batch.waiting == 0 and batch.request is not None:
            batch.request.cancel()

    def _send_queued(self) -> None:
        self._flush = None
        queued, self._queued = self._queued, {}
        for session_id, messages in queued.items():
            for group in self._groups(messages):
                self._send(session_id, group)

    def _groups(self, messages: list[_Message]) -> list[list[_Message]]:
        """
        C{messages} cut into batches of at most L{max_batch} messages and,
        but for one larger message alone, L{max_bytes} bytes.
        """
        groups: list[list[_Message]] = []
        size = 0
        for message in messages:
            length = len(message.payload)
            if (
                not groups
                or len(groups[-1]) >= self.max_batch
                or size + length > self.max_bytes
            ):
                groups.append([])
                size = 0
            groups[-1].append(message)
            size += length
        return groups

    def _send(self, session_id: str, group: list[_Message]) -> None:
        batch = _Batch(len(group))
        for message in group:
            message.batch = batch
        if len(group) == 1:
            payload = group[0].payload
        else:
            payload = b"[" + b",".join(message.payload for message in group) + b"]"
        request = post_payload(
            self._client, self._url, self._headers, payload, session_id
        )
        batch.request = request
        if len(group) == 1:
            request.addCallbacks(
                lambda answer: _settle(group[0].done, answer),
                lambda failure: _settle(group[0].done, failure),
            )
        else:
            request.addCallbacks(
                lambda answer: _settle_all(group, answer),
                lambda failure: _fail_all(group, failure),
            )


def _settle(done: Deferred[Any], result: Any) -> None:
    # A message cancelled while its batch was out has had its answer.
    if not done.called:
        if isinstance(result, Failure):
            done.errback(result)
        else:
            done.callback(result)


def _settle_all(group: list[_Message], answer: Any) -> None:
    """
    Settle each message of C{group} with its entry of C{answer}.
    """
    if not isinstance(answer, list) or len(answer) != len(group):
        _fail_all(
            group,
            Failure(
                RemoteError(
                    200,
                    "bad_json",
                    f"the answer to a batch of {len(group)} is not an array of as many",
                )
            ),
        )
        return
    for message, entry in zip(group, answer, strict=True):
        error = entry_error(entry)
        _settle(message.done, entry if error is None else Failure(error))


def _fail_all(group: list[_Message], failure: Failure) -> None:
    for message in group:
        _settle(message.done, failure)
