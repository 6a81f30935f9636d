"""
Tests for the Python client's batches: what a connection posts in one
reactor turn goes out as one C{POST} (PROTOCOL.md's batches), against a
real txgraphsse server on 127.0.0.1, and each message is settled by its own
entry of the answer.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, gatherResults

from txgraphsse.client import RemoteError

from .test_client import ConnectedCase, failure_of, until, within


class BatchTests(ConnectedCase):
    """
    The batches of a L{Connection}.
    """

    async def test_calls_of_one_turn_share_a_post(self) -> None:
        """
        Ten C{run}s issued in one turn go out as one C{POST} of an array of
        ten calls, each with the session, and each fires with its own
        result.
        """
        _, connection, _, recorder = await self.connected()
        before = len(recorder.posts())
        results = await within(
            gatherResults([connection.run("add", [n, 1]) for n in range(10)])
        )
        self.assertEqual(results, [n + 1 for n in range(10)])
        posts = recorder.posts()[before:]
        self.assertEqual(len(posts), 1)
        headers, body = posts[0]
        self.assertIsInstance(body, list)
        self.assertEqual([call["args"] for call in body], [[n, 1] for n in range(10)])
        self.assertEqual({call["sessionId"] for call in body}, {connection.session_id})
        self.assertEqual(
            headers.getRawHeaders(b"x-graphsse-session"),
            [str(connection.session_id).encode()],
        )

    async def test_a_message_alone_goes_as_it_is(self) -> None:
        """
        A message alone in its turn is posted as an object, not an array
        of one, so that a server without batches understands it.
        """
        _, connection, _, recorder = await self.connected()
        before = len(recorder.posts())
        self.assertEqual(await within(connection.run("add", [2, 3])), 5)
        (post,) = recorder.posts()[before:]
        self.assertIsInstance(post[1], dict)
        self.assertEqual(post[1]["route"], "add")

    async def test_each_entry_settles_its_own_call(self) -> None:
        """
        In one batch, a call to a route the server does not have fails with
        the L{RemoteError} its own C{POST} would have met (C{404 no_route}),
        a route that raises with C{500 route_failed}, and the others of the
        batch still fire with their results.
        """
        _, connection, endpoint, recorder = await self.connected()

        def fails() -> None:
            raise ValueError("no")

        endpoint.graph.add_route("fails", fails)
        before = len(recorder.posts())
        good = connection.run("add", [1, 1])
        missing = connection.run("nowhere")
        raising = connection.run("fails")
        also = connection.post("add", [2, 2])
        self.assertEqual(await within(good), 2)
        error = (await failure_of(missing)).value
        assert isinstance(error, RemoteError)
        self.assertEqual((error.status, error.code), (404, "no_route"))
        error = (await failure_of(raising)).value
        assert isinstance(error, RemoteError)
        self.assertEqual((error.status, error.code), (500, "route_failed"))
        self.assertIsNone(await within(also))
        self.assertEqual(len(recorder.posts()[before:]), 1)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    async def test_replies_to_the_servers_calls_are_batched(self) -> None:
        """
        The server runs a client route ten times at once: the client's ten
        replies come in fewer C{POST}s than ten (one, when the ten requests
        arrive in one read), and every call of the server gets its answer.
        """
        client, connection, endpoint, recorder = await self.connected()
        client.add_route("double", lambda n: 2 * n)
        session = self.session(endpoint, connection)
        before = len(recorder.posts())
        answers = await within(
            gatherResults([session.run("double", [n]) for n in range(10)])
        )
        self.assertEqual(answers, [2 * n for n in range(10)])
        posts = [body for _, body in recorder.posts()[before:]]
        self.assertLess(len(posts), 10)
        replies = [
            message
            for body in posts
            for message in (body if isinstance(body, list) else [body])
        ]
        self.assertEqual(len(replies), 10)

    async def test_cancelled_message_leaves_its_batch(self) -> None:
        """
        A call cancelled in the turn it was made is not sent: its batch
        carries the others.
        """
        _, connection, _, recorder = await self.connected()
        before = len(recorder.posts())
        calls = [connection.run("add", [n, 0]) for n in range(3)]
        calls[1].cancel()
        self.assertEqual(await within(calls[0]), 0)
        self.assertEqual(await within(calls[2]), 2)
        failure = await failure_of(calls[1])
        self.assertTrue(failure.check(CancelledError))
        ((_, body),) = recorder.posts()[before:]
        self.assertEqual([call["args"] for call in body], [[0, 0], [2, 0]])

    async def test_large_turns_are_cut(self) -> None:
        """
        A turn with more messages than a batch may hold (or more bytes) is
        cut into several C{POST}s, each under the limit, and every call is
        answered.
        """
        _, connection, _, recorder = await self.connected()
        connection._batcher.max_batch = 4
        before = len(recorder.posts())
        results = await within(
            gatherResults([connection.run("add", [n, 0]) for n in range(10)])
        )
        self.assertEqual(results, list(range(10)))
        # The three POSTs are out at once, on connections of their own: the
        # server may read them in any order.
        bodies = [body for _, body in recorder.posts()[before:]]
        self.assertEqual(sorted(len(body) for body in bodies), [2, 4, 4])
        self.assertEqual(
            sorted(call["args"][0] for body in bodies for call in body), list(range(10))
        )
        connection._batcher.max_bytes = 200
        before = len(recorder.posts())
        big = "x" * 150
        results = await within(
            gatherResults([connection.run("echo", [big]) for _ in range(3)])
        )
        self.assertEqual(results, [big] * 3)
        bodies = [body for _, body in recorder.posts()[before:]]
        self.assertEqual(len(bodies), 3)
        self.assertTrue(all(isinstance(body, dict) for body in bodies))

    async def test_terminate_cuts_a_batch_short(self) -> None:
        """
        Calls of a batch that is out when the connection is terminated fail
        with L{ClientClosed}, and the client's connections all close.
        """
        client, connection, endpoint, _ = await self.connected()
        waiting: list[Any] = []

        def hang() -> Any:
            held: Deferred[None] = Deferred()
            waiting.append(held)
            return held

        endpoint.graph.add_route("hang", hang)
        calls = [connection.run("hang") for _ in range(2)]
        await until(lambda: len(waiting) == 2, "both calls to arrive")
        await within(connection.terminate())
        for call in calls:
            failure = await failure_of(call)
            self.assertEqual(type(failure.value).__name__, "ClientClosed")
        for held in waiting:
            held.callback(None)
        await within(client.terminate())
