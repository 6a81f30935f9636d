# -*- test-case-name: tests.test_redis -*-
"""
The Lua scripts the Redis broker runs, read once at import from the
package's C{lua/} files.

Each script is sent as it is in its file: its SHA1 is of those bytes, so
C{EVALSHA} finds what C{SCRIPT LOAD} stored (and a file that changes is a
new script to Redis, with a new SHA1).  What each takes and answers is
written next to its name below; the keys are laid out in the L{_redis}
package's docstring.

This module owns the script files and their names; it never talks to Redis
and knows nothing of what the scripts are run for.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from attrs import frozen

__all__ = [
    "CLOSED",
    "DIRECT",
    "HEARTBEAT",
    "LEAVE",
    "OPENED",
    "PRESENCE_READ",
    "PRESENCE_REFRESH",
    "PRESENCE_WRITE",
    "PUBLISH",
    "REGISTER",
    "REPLAY",
    "SCRIPTS",
    "SYNC",
    "Script",
]


@frozen
class Script:
    """
    One Lua script.

    @ivar name: its file's name, without C{.lua}.
    @ivar text: the file's text, as sent to Redis.
    @ivar sha: the SHA1 of C{text}, as Redis names it.
    """

    name: str
    text: str
    sha: str

    @classmethod
    def load(cls, name: str) -> Script:
        """
        Read C{lua/<name>.lua} of this package.
        """
        package = resources.files(__name__.rpartition(".")[0])
        data = (package / "lua" / f"{name}.lua").read_bytes()
        return cls(name, data.decode("utf-8"), hashlib.sha1(data).hexdigest())


#: KEYS: seq, epoch, stream, bus, evicted, channels.  ARGV: new epoch (a
#: fresh random one each time, so that an epoch never comes back after Redis
#: lost its data), history size (0: none), channel, time, event, data,
#: origin, "1" for an event kept through an outage, the bus message after
#: its "s" and "i" fields.
PUBLISH = Script.load("publish")

#: KEYS: where.  ARGV: session id, prefix, message.  Publishes the message
#: to the session's node if that node is alive: {node, receivers}, or nil.
DIRECT = Script.load("direct")

#: ARGV: prefix, node, ttl in ms, keys...  Keeps this node alive, forgets
#: dead nodes and their sessions; answers {live nodes, {sessions of K on the
#: other live nodes, for each key K}, 1 if this node was not (or no longer)
#: among the nodes}.
HEARTBEAT = Script.load("heartbeat")

#: ARGV: prefix, node, key, session ids...  This node holds exactly these
#: sessions of the key: sessions it lost while Redis was away are announced
#: closed.
REGISTER = Script.load("register")

#: ARGV: prefix, node, key, session id.
OPENED = Script.load("opened")

#: ARGV: prefix, node, key, session id, message for every node.
CLOSED = Script.load("closed")

#: ARGV: prefix, node.  This node leaves the cluster.
LEAVE = Script.load("leave")

#: KEYS: epoch, seq, channels, bus, evicted.  ARGV: new epoch, the epoch
#: this node knows, the last sequence number it delivered (-1: none), node,
#: sync token, stream key prefix.  Publishes a marker on the bus: events
#: before it on the bus are those up to the sequence number it carries.
#: Answers {epoch, seq, newest trimmed seq, channel, entries, ...} with what
#: this node missed since it delivered (all that is kept, if the epoch is
#: not the one it knows: Redis lost the old one).
SYNC = Script.load("sync")

#: KEYS: epoch, seq, evicted, streams...  ARGV: the epoch of the client's
#: id, its sequence number (-1: malformed), the last sequence number this
#: node delivered, channel names...  Answers {reset, epoch, then for each
#: channel: the newest id trimmed off (or ''), the entries after the
#: client's id}.
REPLAY = Script.load("replay")

#: KEYS: presence index, this node's presence hash.  ARGV: node, ttl in
#: ms, "1" to empty the hash first, how many session ids to remove, those
#: ids, then session id and entry pairs to write.  Keeps this node in the
#: index until ttl from now while its hash holds anyone (the hash for twice
#: that); answers 1 if it does, 0 if it no longer does (and left the index).
PRESENCE_WRITE = Script.load("presence_write")

#: KEYS: presence index, this node's presence hash.  ARGV: node, ttl in
#: ms, the head and tail of a node's presence hash key (around its id).
#: Keeps this node's entries for ttl more, and takes out those of the
#: nodes whose time ran out: answers {1 if this node's hash was still
#: there (else 0, and it is to be written again), the entries taken out}.
PRESENCE_REFRESH = Script.load("presence_refresh")

#: KEYS: presence index.  ARGV: the head and tail of a node's presence
#: hash key.  Answers the entries of every node whose time has not run out.
PRESENCE_READ = Script.load("presence_read")

#: Every script, loaded into Redis each time the link comes up.
SCRIPTS = (
    PUBLISH,
    DIRECT,
    HEARTBEAT,
    REGISTER,
    OPENED,
    CLOSED,
    LEAVE,
    SYNC,
    REPLAY,
    PRESENCE_WRITE,
    PRESENCE_REFRESH,
    PRESENCE_READ,
)
