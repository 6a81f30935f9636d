# -*- test-case-name: tests.test_client -*-
"""
The Python client's private modules; L{txgraphsse.client} is their face.

From the bottom up:

  - C{_waiters}: the L{Deferred <twisted.internet.defer.Deferred>}s waiting
    for one thing to happen.
  - C{_handlers}: callbacks by event name, each failure logged.
  - C{_watchdog}: a deadline that each sign of life pushes back.
  - C{_http}: connections the client can account for, bodies, remote errors.
  - C{_attempt}: one C{GET} of a stream and what its answer turns out to be.
  - C{_source}: L{EventSource}, one stream's life and its reconnection.
  - C{_routes}: the client's own routes, picked by C{_verbs}' rule and run.
  - C{_post}: one JSON C{POST} of a connection on the wire, and what the
    modules above it post through.
  - C{_tokens}: a connection's tokens from C{get_token}, renewed before
    they expire.
  - C{_batch}: a connection's C{POST}s of one turn, coalesced into one.
  - C{_subscriptions}: a connection's subscriptions to the server's routes.
  - C{_serving}: answering the server's calls on a connection.
  - C{_connection}: L{Connection}, one connection's session and calls.
  - C{_graph}: L{GraphSSEClient}, the routes and the connections.
  - C{_api}: L{ServerAPI <txgraphsse.client.ServerAPI>}, the server API's
    client, for backends and scripts.

A module imports only those above it in this list; where it needs
something of a higher one (a connection, a client, a source), it names it
in a C{typing.Protocol}.  The package shares only the wire modules with the
server (C{_parser}, C{_messages}, C{_encoder}, C{_verbs}) and never imports
the server's modules; nothing outside it but the face imports it.
"""
