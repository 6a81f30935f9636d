# -*- test-case-name: tests.test_client -*-
"""
The Python client's private modules; L{txgraphsse.client} is their face.

This package owns the client: the stream (C{_source}), its connections and
bodies (C{_http}), and the graphscript side of a connection and a client
(C{_graph}).  It shares only the wire modules with the server (the parser,
the envelopes, the encoder and the route rule of C{_verbs}) and never imports
the server's modules; nothing outside the package but the face imports it.
"""
