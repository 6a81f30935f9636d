"""
txgraphsse: Server-Sent Events with two-way calls for Twisted.

The public API; everything else lives in private modules.
"""

from ._backend import SSEBackend, SSEService
from ._broker import HistoryPolicy, IBroker, InMemoryBroker, Replay, StoredEvent
from ._calls import SessionClosed
from ._channel import Channel, ChannelSpec
from ._encoder import encode_comment, encode_event, encode_retry
from ._endpoint import SSEClient, SSEEndpoint
from ._graph import Caller, Value
from ._parser import EventStreamParser, ServerSentEvent
from ._resource import SSEResource
from ._session import SSESession

__version__ = "0.1.0"

__all__ = (
    "Caller",
    "Channel",
    "ChannelSpec",
    "EventStreamParser",
    "HistoryPolicy",
    "IBroker",
    "InMemoryBroker",
    "Replay",
    "SSEBackend",
    "SSEClient",
    "SSEEndpoint",
    "SSEResource",
    "SSEService",
    "SSESession",
    "ServerSentEvent",
    "SessionClosed",
    "StoredEvent",
    "Value",
    "__version__",
    "encode_comment",
    "encode_event",
    "encode_retry",
)
