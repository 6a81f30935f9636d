# -*- test-case-name: tests.test_session -*-
"""
Feeding an iterable into a stream, item by item: the seed's
C{streamIterable}.

This module owns the pace (one item per reactor turn for a plain iterable,
as they come for an async one) and the stop (when the receiver closes).  It
sends through a function it is given and knows nothing of sessions,
channels or the wire.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

__all__ = ["pump"]


def pump(
    iterable: Iterable[Any] | AsyncIterable[Any],
    send: Callable[[Any], object],
    is_open: Callable[[], bool],
    clock: IReactorTime,
) -> Deferred[int]:
    """
    C{send} each item of C{iterable} while C{is_open()}.

    @return: a L{Deferred} firing with the number of items sent, or failing
        with what the iterable raised.
    """
    if isinstance(iterable, AsyncIterable):

        async def drain() -> int:
            count = 0
            async for item in iterable:
                if not is_open():
                    break
                send(item)
                count += 1
            return count

        return Deferred.fromCoroutine(drain())

    iterator = iter(iterable)
    done: Deferred[int] = Deferred()
    count = 0

    def step() -> None:
        nonlocal count
        if not is_open():
            done.callback(count)
            return
        try:
            item = next(iterator)
        except StopIteration:
            done.callback(count)
            return
        except Exception:
            done.errback()
            return
        send(item)
        count += 1
        clock.callLater(0, step)

    step()
    return done
