"""
txgraphsse: Server-Sent Events with two-way calls for Twisted.

The public API; everything else lives in private modules.
"""

from ._auth import (
    AccessDenied,
    IAuthorizer,
    JWTAuthorizer,
    JWTPrincipal,
    Unauthorized,
)
from ._backend import SSEBackend, SSEService
from ._broker import HistoryPolicy, IBroker, InMemoryBroker, Replay, StoredEvent
from ._calls import RemoteCallError, RouteError, SessionClosed
from ._channel import Channel, ChannelSpec
from ._cors import CORSPolicy
from ._encoder import encode_comment, encode_event, encode_retry
from ._endpoint import SSEClient, SSEEndpoint
from ._graph import Caller, Value
from ._inbound import SSESite
from ._limits import Limits
from ._messages import ProtocolError
from ._outcalls import TooManyCalls
from ._parser import EventStreamParser, ServerSentEvent
from ._resource import SSEResource
from ._session import SSESession

__version__ = "0.1.0"

__all__ = (
    "AccessDenied",
    "CORSPolicy",
    "Caller",
    "Channel",
    "ChannelSpec",
    "EventStreamParser",
    "HistoryPolicy",
    "IAuthorizer",
    "IBroker",
    "InMemoryBroker",
    "JWTAuthorizer",
    "JWTPrincipal",
    "Limits",
    "ProtocolError",
    "RemoteCallError",
    "Replay",
    "RouteError",
    "SSEBackend",
    "SSEClient",
    "SSEEndpoint",
    "SSEResource",
    "SSEService",
    "SSESession",
    "SSESite",
    "ServerSentEvent",
    "SessionClosed",
    "StoredEvent",
    "TooManyCalls",
    "Unauthorized",
    "Value",
    "__version__",
    "encode_comment",
    "encode_event",
    "encode_retry",
)
