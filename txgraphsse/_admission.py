# -*- test-case-name: tests.test_integration,tests.test_inbound -*-
"""
Whether a stream may open, and on what: the room the endpoint and the
client's address have left, the channels the request asks for and the
event id it resumes from.

Asked by the endpoint's HTTP face before its authorizer, and again after a
slow one; it reads the endpoint's limits, channels and counts, and changes
nothing.
"""

from __future__ import annotations

from twisted.web.server import Request

from ._channel import check_dynamic_name
from ._endpoint import SSEEndpoint
from ._messages import ProtocolError

__all__ = ["check_capacity", "stream_arguments"]


def stream_arguments(
    endpoint: SSEEndpoint, request: Request
) -> tuple[list[str], str | None]:
    """
    The channels a stream's C{request} asks to join (checked against
    C{endpoint}'s, its limit and, for dynamic ones, the names a client may
    give a channel: printable, and bounded by the endpoint's
    C{channel_table.max_name}) and the C{Last-Event-ID} it resumes from
    (header, else the C{lastEventId} query argument).  Whether the endpoint
    has room for new dynamic channels is asked when they are made, after
    the authorizer.

    @raise ProtocolError: for a closed endpoint, too many or unknown
        channels, or a name that cannot be a channel's.
    """
    if endpoint.closed:
        raise ProtocolError(503, "unavailable", "this endpoint is closed")
    args = request.args or {}
    names: list[str] = []
    for raw in args.get(b"channels", []):
        for part in raw.decode("utf-8", "replace").split(","):
            name = part.strip()
            if name and name not in names:
                names.append(name)
    limit = endpoint.limits.max_channels
    if limit is not None and len(names) > limit:
        raise ProtocolError(403, "forbidden", f"at most {limit} channels")
    for name in names:
        if name in endpoint.channels:
            continue
        if not endpoint.dynamic_channels:
            raise ProtocolError(
                403, "forbidden", f"no channel {name!r} on this endpoint"
            )
        try:
            check_dynamic_name(name, endpoint.channel_table.max_name)
        except ValueError as why:
            shown = name if len(name) <= 40 else name[:40] + "..."
            raise ProtocolError(
                400, "bad_channel", f"{shown!r} cannot be a channel's name: {why}"
            ) from None
    header = request.getHeader(b"last-event-id")
    if header is None:
        query = args.get(b"lastEventId")
        header = query[0] if query else None
    last_event_id = None
    if header is not None:
        last_event_id = header.decode("utf-8", "replace")
    return names, last_event_id


def check_capacity(endpoint: SSEEndpoint, address: str) -> None:
    """
    Refuse a stream C{endpoint} has no room for, or that the client at
    C{address} has no more room for.

    @raise ProtocolError: C{503 unavailable}, saying why.
    """
    limits = endpoint.limits
    if endpoint.stopping:
        raise ProtocolError(503, "unavailable", "the server is shutting down")
    if (
        limits.max_sessions is not None
        and len(endpoint.sessions) >= limits.max_sessions
    ):
        raise ProtocolError(503, "unavailable", "too many sessions; retry later")
    per_address = limits.max_sessions_per_address
    if per_address is not None and endpoint.sessions_from(address) >= per_address:
        raise ProtocolError(503, "unavailable", "too many sessions from your address")
