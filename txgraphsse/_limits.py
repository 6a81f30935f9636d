# -*- test-case-name: tests.test_security -*-
"""
The limits an endpoint enforces on what clients may ask of it.

This module owns the numbers (L{Limits}) and the small mechanisms that count
against them: a token bucket per caller, the depth of a JSON value, and the
tally of sessions per client address.  It knows nothing of HTTP: the resource
asks, and turns a refusal into the PROTOCOL.md error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any

from attrs import define, field, frozen
from twisted.web.iweb import IRequest

__all__ = [
    "CallRates",
    "Limits",
    "TokenBucket",
    "client_address",
    "json_depth",
    "request_address",
    "request_ended",
]

_Network = IPv4Network | IPv6Network


def _networks(values: str | Iterable[str | _Network]) -> tuple[_Network, ...]:
    """
    Addresses and networks (C{"10.0.0.0/8"}, C{"::1"}) as networks.

    @raise ValueError: for anything else.
    """
    if isinstance(values, str):
        values = [values]
    return tuple(
        value if isinstance(value, _Network) else ip_network(value, strict=False)
        for value in values
    )


@frozen
class Limits:
    """
    What one endpoint allows.  L{None} means no limit.

    The limits on connections and request heads (C{max_uri} to
    C{max_connecting}) bite as the bytes arrive, where the endpoint is
    served by an L{txgraphsse.SSESite} (as C{twistd graphsse} does): a plain
    C{Site} reads whole requests before the endpoint sees them.

    @ivar max_body: bytes in one C{POST} body (C{413 too_large}).
    @ivar max_json_depth: nesting of arrays and objects in one body
        (C{400 bad_json}).
    @ivar max_batch: messages in one batched C{POST} (C{400 bad_message}).
    @ivar calls_per_second: sustained C{POST}s per session (or, without a
        session, per client address), with bursts of C{call_burst}
        (C{429 rate_limited}).
    @ivar address_calls_per_second: sustained C{POST}s per client address,
        all its sessions together, with bursts of C{address_call_burst}:
        what one address may cost however many streams it opens.  Taken
        before the body is read or parsed.
    @ivar max_sessions: open streams on this node (C{503 unavailable}).
    @ivar max_sessions_per_address: open streams per client address
        (C{503 unavailable}).
    @ivar max_pending_calls: server-to-client calls waiting on one session;
        more fail at once with L{txgraphsse.TooManyCalls}.
    @ivar max_subscriptions: server routes one session may subscribe to
        (C{429 rate_limited}).
    @ivar max_channels: channels one session may join (C{403 forbidden}).
    @ivar retry_after: seconds a refused client is told to wait.
    @ivar max_uri: bytes in a request line (C{414 uri_too_long}).
    @ivar max_header_bytes: bytes in a request's header lines, all together
        (C{431 headers_too_large}).
    @ivar header_timeout: seconds a request's head may take to arrive, from
        its first byte, however it trickles (C{408 timeout}).
    @ivar body_timeout: seconds a request's body may take to arrive, from
        the end of its head (C{408 timeout}).
    @ivar max_connecting_per_address: connections from one client address
        that are not streams (yet): a connection past it is refused as it
        opens (C{503 unavailable}).  Trusted proxies are not counted.
    @ivar max_connecting: the same for all addresses together.
    @ivar trusted_proxies: the proxies (addresses or networks, such as
        C{"127.0.0.1"} or C{"10.0.0.0/8"}) whose C{X-Forwarded-For} says who
        the client is, for the per-address limits and the logs.  Behind
        nginx, without it every client has nginx's address.  A peer not in
        it is the client, whatever it sends.
    """

    max_body: int = 1 << 20
    max_json_depth: int = 64
    max_batch: int = 100
    calls_per_second: float | None = None
    call_burst: int = 50
    address_calls_per_second: float | None = None
    address_call_burst: int = 200
    max_sessions: int | None = None
    max_sessions_per_address: int | None = None
    max_pending_calls: int | None = 10_000
    max_subscriptions: int | None = 256
    max_channels: int | None = 64
    retry_after: int = 5
    trusted_proxies: tuple[_Network, ...] = field(default=(), converter=_networks)
    max_uri: int = 8192
    max_header_bytes: int = 16384
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connecting_per_address: int | None = 256
    max_connecting: int | None = 10_000

    def trusts(self, peer: str) -> bool:
        """
        Whether C{peer} (an address) is one of the trusted proxies.
        """
        if not self.trusted_proxies:
            return False
        try:
            address = ip_address(peer)
        except ValueError:
            return False
        return _trusted(address, self.trusted_proxies)


@define
class TokenBucket:
    """
    C{rate} tokens a second, at most C{burst} saved up.
    """

    rate: float
    burst: float
    tokens: float = field(default=-1.0)
    stamp: float = 0.0

    def take(self, now: float) -> bool:
        """
        Spend one token if there is one.
        """
        if self.tokens < 0:
            self.tokens = self.burst
            self.stamp = now
        else:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class CallRates:
    """
    The call buckets of one endpoint: one per session, one per address for
    calls that name no session this node holds (made-up ids must not mint
    fresh buckets), and one per address for all its calls together.
    """

    #: Past this many buckets of a kind, the address buckets that are full
    #: again are forgotten.
    PRUNE_AT = 100_000

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buckets: dict[str, TokenBucket] = {}
        self._addresses: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float) -> bool:
        """
        Count one client call against C{key}'s rate (a session id, or C{@}
        and an address).

        @return: whether it is within C{Limits.calls_per_second}.
        """
        limits = self._limits
        return _take(
            self._buckets, key, now, limits.calls_per_second, limits.call_burst
        )

    def take_address(self, address: str, now: float) -> bool:
        """
        Count one call against everything C{address} sends.

        @return: whether it is within C{Limits.address_calls_per_second}.
        """
        limits = self._limits
        return _take(
            self._addresses,
            "@" + address,
            now,
            limits.address_calls_per_second,
            limits.address_call_burst,
        )

    def forget(self, key: str) -> None:
        """
        Drop C{key}'s bucket (a session that closed).
        """
        self._buckets.pop(key, None)

    def __len__(self) -> int:
        return len(self._buckets) + len(self._addresses)


def _take(
    buckets: dict[str, TokenBucket],
    key: str,
    now: float,
    rate: float | None,
    burst: int,
) -> bool:
    """
    Spend a token of C{key}'s bucket in C{buckets}, made full on first use.
    Past L{CallRates.PRUNE_AT} buckets, those of addresses (keys that start
    with C{@}) that have been quiet long enough to be full again are
    forgotten first: forgetting them changes nothing.  Sessions' buckets go
    with their sessions.
    """
    if rate is None:
        return True
    bucket = buckets.get(key)
    if bucket is None:
        if len(buckets) >= CallRates.PRUNE_AT:
            refill = burst / rate
            for stale in [
                k
                for k, b in buckets.items()
                if k.startswith("@") and now - b.stamp >= refill
            ]:
                del buckets[stale]
        bucket = buckets[key] = TokenBucket(rate, burst)
    return bucket.take(now)


def _trusted(address: IPv4Address | IPv6Address, proxies: Sequence[_Network]) -> bool:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in proxies)


def request_ended(request: Any) -> Callable[[], bool]:
    """
    A test of whether C{request} has ended (finished, or its connection
    lost), for an answer that comes later: C{notifyFinish} says so.
    """
    ended = [False]
    request.notifyFinish().addBoth(lambda _: ended.__setitem__(0, True))
    return lambda: ended[0]


def request_address(request: IRequest, limits: Limits) -> str:
    """
    The client address of C{request}: its peer's, or, from a proxy in
    C{limits.trusted_proxies}, the nearest untrusted hop of its
    C{X-Forwarded-For} (L{client_address}).
    """
    address = request.getClientAddress()
    peer = str(getattr(address, "host", address))
    if not limits.trusted_proxies:
        return peer
    forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
    return client_address(peer, forwarded, limits.trusted_proxies)


def client_address(
    peer: str, forwarded: Sequence[bytes], proxies: Sequence[_Network]
) -> str:
    """
    Who the client is: C{peer} (the connection's address), or, when the peer
    is a trusted proxy, the nearest address in C{forwarded} (the
    C{X-Forwarded-For} lines, which every proxy extends on the right) that
    is not a trusted proxy.  What lies to the left of that address came
    from the client and is not believed; a malformed entry where a trusted
    proxy wrote leaves the last address that was trusted.
    """
    if not proxies or not forwarded:
        return peer
    try:
        address = ip_address(peer)
    except ValueError:
        return peer
    if not _trusted(address, proxies):
        return peer
    client = peer
    for raw in reversed(b",".join(forwarded).split(b",")):
        try:
            hop = ip_address(raw.strip().decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return client
        client = str(hop)
        if not _trusted(hop, proxies):
            return client
    return client


def json_depth(value: Any, limit: int, text: bytes | None = None) -> bool:
    """
    Whether C{value} nests arrays and objects at most C{limit} deep, checked
    without recursion so that a hostile body cannot exhaust the stack.

    @param text: the JSON C{value} was read from, if at hand: with fewer
        brackets in it than C{limit}, nothing can nest deeper, and nothing
        is walked (most messages).
    """
    if text is not None and text.count(b"[") + text.count(b"{") <= limit:
        return True
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children)
    return True
