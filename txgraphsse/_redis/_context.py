# -*- test-case-name: tests.test_redis -*-
"""
What every part of the Redis broker is built with: the clock, the L{Link},
the L{Names} of keys and channels, and what this node knows of each
endpoint key (L{Context}, made once by the coordinator); and L{Part}, the
one way a part takes them.

It owns no behaviour: it never sends, reads or changes anything.
"""

from __future__ import annotations

from attrs import frozen
from twisted.internet.interfaces import IReactorTime

from ._link import Link
from ._state import Endpoints, Names

__all__ = ["Context", "Part"]


@frozen
class Context:
    """
    What the parts of one broker share.

    @ivar clock: the reactor's time.
    @ivar link: the link to Redis.
    @ivar names: this node's names of keys and channels.
    @ivar endpoints: what this node knows of each endpoint key.
    """

    clock: IReactorTime
    link: Link
    names: Names
    endpoints: Endpoints


class Part:
    """
    A part of the broker, holding the shared L{Context} as its
    C{_clock}, C{_link}, C{_names} and C{_endpoints}.
    """

    def __init__(self, context: Context) -> None:
        self._clock = context.clock
        self._link = context.link
        self._names = context.names
        self._endpoints = context.endpoints
