"""
A real C{redis-server} for tests: started on a free port of 127.0.0.1 in a
temporary directory, stopped by its own PID.

Starting and stopping wait (briefly, on the local machine) until the server
answers or is gone; they block the caller, which is fine in a test's set-up
and in the few places a test restarts the server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

__all__ = ["RedisServer", "free_port"]

_INSTALL = (
    "redis-server is not installed: the Redis tests need a real one;"
    " install it with `sudo apt-get install redis-server`"
)


def free_port() -> int:
    """
    A TCP port of 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _encode(*args: Any) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Reader:
    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = b""

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = self._conn.recv(65536)
            if not chunk:
                raise ConnectionError("redis-server closed the connection")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line

    def _exactly(self, size: int) -> bytes:
        while len(self._buffer) < size + 2:
            chunk = self._conn.recv(65536)
            if not chunk:
                raise ConnectionError("redis-server closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size + 2 :]
        return data

    def reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else self._exactly(size).decode()
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.reply() for _ in range(count)]
        raise RuntimeError(f"unexpected reply {line!r}")


class RedisServer:
    """
    One C{redis-server} process.

    @ivar port: the port it listens on (kept across L{stop} and L{start}).
    @ivar directory: its working directory (where an append-only file
        lives, so data survive a restart when C{appendonly} is on).
    """

    def __init__(self, appendonly: bool = False) -> None:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.access(binary, os.X_OK):
            raise AssertionError(_INSTALL)
        self._binary = binary
        self.appendonly = appendonly
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix="txgraphsse-redis-")
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 10.0) -> None:
        """
        Start the server and wait until it answers C{PING}.
        """
        if self.running:
            return
        self._log = open(os.path.join(self.directory, "redis.log"), "ab")  # noqa: SIM115
        self._process = subprocess.Popen(
            [
                self._binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.directory,
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise AssertionError(
                    f"redis-server exited with {self._process.returncode};"
                    f" see {self.directory}/redis.log"
                )
            try:
                if self.command("PING") == "PONG":
                    return
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"redis-server did not answer in {timeout} s")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """
        Stop the server (C{SIGTERM}, then C{SIGKILL}) and wait until it is
        gone.  Its data stay in L{directory}.
        """
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self, timeout: float = 10.0) -> None:
        """
        Kill the server (C{SIGKILL}: no chance to write anything) and wait
        until it is gone.
        """
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout)
        self.stop(timeout)

    def cleanup(self) -> None:
        """
        Stop the server and remove its directory.
        """
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def command(self, *args: Any) -> Any:
        """
        Run one command on a connection of its own, and return the reply
        (strings decoded, errors raised as L{RuntimeError}).
        """
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as conn:
            conn.sendall(_encode(*args))
            return _Reader(conn).reply()
