# -*- test-case-name: tests.test_redis -*-
"""
A Redis backplane: several processes ("nodes") serve the same endpoints, and
L{RedisBroker} makes them one.

This is the public face; the broker lives in the private package
L{txgraphsse._redis}, whose docstring lays out the keys, the channels and
how it holds together.  This module owns no code, and must never grow any:
it names what users import.
"""

from __future__ import annotations

from ._redis._broker import RedisBroker

__all__ = ["RedisBroker"]
