# -*- test-case-name: tests.test_redis -*-
"""
A Redis backplane: several processes ("nodes") serve the same endpoints, and
L{RedisBroker} makes them one.

Every node publishes channel events through Redis and delivers what comes
back on the bus, so every node's sessions get every event once and in one
order; event ids, history and replay live in Redis, so a client may
reconnect to any node; pushes, forwarded C{POST}s and replies find the node
that holds the session they name.  While Redis is away, each node keeps
serving its own sessions, and writes what they got into history once Redis
is back.

This package owns the Redis keys and channels, the link to Redis and what
happens while it is down.  It knows endpoint keys, channel names and session
ids, and speaks to endpoints only through L{IDeliverySink}: never HTTP,
sessions or encoding.  Redis must be private to the cluster: whoever can
publish on its channels can act as any node.  Its public face is
L{txgraphsse.redis}; nothing outside it imports these modules.

Keys and channels, for prefix C{P}, endpoint key C{K} (its path) and node
C{N}::

    P:K:seq            the sequence of events with history (INCR)
    P:K:epoch          the epoch of event ids, made once, shared by all nodes
    P:K:h:CHANNEL      a stream per channel with history, entry ids "SEQ-0"
    P:K:evicted        hash: channel -> id of the newest entry trimmed off
    P:K:channels       set: the channels that have a stream
    P:K:bus            pub/sub: every published event, in sequence order
    P:K:where          hash: session id -> the node that holds it
    P:K:n:N            set: N's sessions of K
    P:nk:N             set: the keys N has sessions of
    P:nodes            set: the nodes; P:alive:N expires unless N refreshes it
    P:node:N           pub/sub: messages for N (push, forward, answers)
    P:all              pub/sub: messages for every node (closed, settle)
    P:K:pn:CHANNEL     sorted set: the nodes with members of CHANNEL (one
                       that keeps presence), scored by when their entries
                       run out (Redis's clock, in ms)
    P:K:ph:N:CHANNEL   hash: N's members of CHANNEL: session id -> entry

How it holds together:

  - Order: one connection sends every command, and one Lua script per event
    takes its sequence number, stores it and publishes it, so the bus
    carries events in sequence order and every node (the publisher too)
    delivers them from the bus, in that order.
  - Replay: a node answers from the streams up to the last event it has
    delivered; later ones reach the reconnecting session live.  (A client
    that moves to a node whose bus lags behind the one it left may get the
    few events in between twice.)  After each
    (re)subscription a marker published on the bus tells a node where it
    stands, and what it missed while away is delivered from the streams
    (as far as history reaches; it logs when it does not).
  - Outages: while Redis is away, events reach this node's sessions at
    once, without ids; those with history are kept (up to
    C{outage_buffer}) and written when Redis is back, so that replay covers
    the gap and the other nodes' sessions get them.  An event in flight
    when the link broke, whose outcome is unknown, is kept too: should
    Redis have stored it after all, it is stored twice.  A gap is never
    silent: when the node may have missed what it cannot deliver (a new
    epoch, history trimmed past where it was, or a channel without
    history), the members concerned get a C{reset} at once.
  - Nodes: each refreshes a key that expires after C{node_ttl}; a node
    whose key expired is dead to the others, which fail their calls to its
    sessions and forget them.  A node that comes back registers again.
  - Presence: each node refreshes its members of the channels that keep
    presence every C{presence_ttl / 3}; a read skips the nodes whose
    C{presence_ttl} has run out since, and the next live node to refresh
    the channel takes their entries out and announces them gone.  Each
    node publishes its own batches of joins and leaves on the channel, as
    events without history.

Limits: Redis must keep its data for ids to stay meaningful (with
C{appendonly yes}; C{appendfsync always} where losing the last second on a
crash matters); after a loss, a new epoch makes clients reset.  Requires
Redis 6.2 or later (exclusive C{XRANGE}), and one Redis, not Redis Cluster
(scripts touch keys they compute).

The parts, each one reason to change, lowest first (a module imports only
the ones listed before it; where a part needs something of a higher one,
it declares a C{typing.Protocol} that the higher one satisfies; of the
rest of txgraphsse they import only the broker interfaces and
L{txgraphsse._internals.probed})::

    _protocol   the two connections; the one seam with txredisapi's
                private hooks, probed at import, with a plain fallback
    _scripts    the Lua scripts, read from lua/*.lua, and their SHA1s
    _state      key and channel names, what this node knows of each
                endpoint key, an event on its way out, stream entries
    _link       the link: connect, log in, load the scripts, reconnect;
                send commands and scripts
    _context    what every part is built with (clock, link, names,
                endpoints), made once by the coordinator
    _nodes      liveness and the session directory: heartbeat, dead
                nodes, register, sessions opened and closed, leave
    _replay     replay from the streams, and replays that wait
    _publish    publishing, in flight and through an outage
    _bus        the bus: delivery in order, markers, catching up
    _peers      calls between nodes: push, forward, settle, answers
    _presence   presence: each node's members of channels that keep it,
                refreshed, read for all nodes, dead nodes' taken out
    _broker     RedisBroker: the IBroker face, composing the parts
"""
