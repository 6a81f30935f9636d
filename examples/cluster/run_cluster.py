#!/usr/bin/env python3
"""
A txgraphsse cluster on this machine, in one command: Redis, three
C{twistd -n graphsse} nodes tied together by it, and nginx in front.

    python examples/cluster/run_cluster.py              # http://127.0.0.1:8080/
    python examples/cluster/run_cluster.py --port 9000 --nodes 3 --workers 2

Everything listens on 127.0.0.1 only: nginx on C{--port}, Redis and the
nodes on free ports.  Each child runs in its own process group, with its
logs and files in one temporary directory; Ctrl-C (or C{SIGTERM}) stops them
all by their PIDs (C{SIGTERM}, then C{SIGKILL} after 10 s) and removes the
directory (unless C{--keep}).

It needs C{redis-server} and C{nginx} (C{apt-get install redis-server
nginx}), and txgraphsse installed in the running Python (C{pip install -e
'.[redis]'}).  The nginx configuration is C{examples/cluster/nginx.conf};
L{nginx_config} fills in its placeholders, and C{tests/test_cluster.py} uses
the same functions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TEMPLATE = HERE / "nginx.conf"

NGINX_INSTALL = "nginx is not installed: run `sudo apt-get install nginx`"
REDIS_INSTALL = "redis-server is not installed: run `sudo apt-get install redis-server`"


def free_port() -> int:
    """
    A TCP port of 127.0.0.1 that nothing listens on right now.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def find_nginx() -> str | None:
    """
    The nginx binary (on C{PATH}, or Debian's C{/usr/sbin/nginx}), if any.
    """
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def find_redis() -> str | None:
    """
    The redis-server binary, if any.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    return "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", 1) else None


def nginx_config(
    prefix: Path | str,
    listen: str,
    upstreams: Sequence[str],
    template: Path = TEMPLATE,
) -> str:
    """
    C{examples/cluster/nginx.conf} with its placeholders filled in.

    @param prefix: the directory of nginx's pid, logs and temp files.
    @param listen: where nginx listens (C{127.0.0.1:8080}).
    @param upstreams: the nodes (C{127.0.0.1:8081}, ...).
    """
    servers = "\n        ".join(
        f"server {address} max_fails=1 fail_timeout=5s;" for address in upstreams
    )
    lines = []
    for line in template.read_text().splitlines(keepends=True):
        if not line.lstrip().startswith("#"):  # the comments name them too
            for name, value in (
                ("@PREFIX@", str(prefix)),
                ("@LISTEN@", listen),
                ("@SERVERS@", servers),
            ):
                line = line.replace(name, value)
        lines.append(line)
    return "".join(lines)


def prepare_nginx(
    prefix: Path, listen: str, upstreams: Sequence[str]
) -> tuple[list[str], Path]:
    """
    Write the configuration into C{prefix} (made with its C{logs} and
    C{tmp} directories) and return nginx's command line, in the foreground,
    and the configuration's path.

    @raise RuntimeError: nginx is not installed.
    """
    binary = find_nginx()
    if binary is None:
        raise RuntimeError(NGINX_INSTALL)
    (prefix / "logs").mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(prefix, listen, upstreams))
    command = [
        binary,
        "-p",
        str(prefix),
        "-c",
        str(conf),
        "-e",
        str(prefix / "logs" / "error.log"),
        "-g",
        "daemon off;",
    ]
    return command, conf


def twistd_command() -> list[str]:
    """
    How to run twistd with the running Python.
    """
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def node_command(port: int, redis_url: str, extra: Sequence[str] = ()) -> list[str]:
    """
    The command line of one node: C{twistd -n graphsse} on 127.0.0.1:C{port},
    logging to stdout, with no pid file.
    """
    return [
        *twistd_command(),
        "-n",
        "--pidfile=",
        "graphsse",
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
        "--redis",
        redis_url,
        *extra,
    ]


def redis_command(port: int, directory: Path) -> list[str]:
    """
    The command line of a throwaway redis-server on 127.0.0.1:C{port}.

    @raise RuntimeError: redis-server is not installed.
    """
    binary = find_redis()
    if binary is None:
        raise RuntimeError(REDIS_INSTALL)
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "no",
    ]


def python_env() -> dict[str, str]:
    """
    The environment for the nodes: this checkout first on C{PYTHONPATH}, so
    that C{twistd} finds the plugin and C{--app} modules of the checkout.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def wait_listening(
    port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 20.0
) -> None:
    """
    Wait until something accepts connections on 127.0.0.1:C{port}.

    @raise RuntimeError: C{process} exited first, or C{timeout} passed.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} did not listen on {port} in {timeout} s"
                ) from None
            time.sleep(0.05)


def stop(
    processes: Sequence[tuple[str, subprocess.Popen[bytes]]], timeout: float = 10.0
) -> None:
    """
    C{SIGTERM} each process by its PID, wait for all of them, and C{SIGKILL}
    those still running after C{timeout} seconds.
    """
    for _, process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, process in processes:
        try:
            process.wait(max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            print(f"{name} (pid {process.pid}) did not stop: SIGKILL", file=sys.stderr)
            process.kill()
            process.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="nginx's port (8080)")
    parser.add_argument("--nodes", type=int, default=3, help="twistd nodes (3)")
    parser.add_argument("--workers", type=int, default=1, help="processes per node (1)")
    parser.add_argument(
        "--history", type=int, default=1000, help="events kept for replay"
    )
    parser.add_argument("--app", help="an --app for every node (module:attr)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the directory of logs"
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="txgraphsse-cluster-"))
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    logs: list[IO[bytes]] = []

    def spawn(
        name: str,
        command: list[str],
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        log = open(work / f"{name}.log", "wb")  # noqa: SIM115
        logs.append(log)
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own process group: Ctrl-C reaches this script only, which
            # stops the children in order.
            start_new_session=True,
        )
        children.append((name, process))
        return process

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        redis_port = free_port()
        redis = spawn("redis", redis_command(redis_port, work))
        wait_listening(redis_port, redis, "redis-server")
        redis_url = f"redis://127.0.0.1:{redis_port}/0"

        # nginx connects from 127.0.0.1: its X-Forwarded-For names the client.
        extra = [
            "--history",
            str(args.history),
            "--workers",
            str(args.workers),
            "--trusted-proxy",
            "127.0.0.1",
        ]
        if args.app:
            extra += ["--app", args.app]
        nodes = []
        for index in range(args.nodes):
            port = free_port()
            node_dir = work / f"node-{index}"
            node_dir.mkdir()
            process = spawn(
                f"node-{index}",
                node_command(port, redis_url, extra),
                cwd=node_dir,
                env=python_env(),
            )
            nodes.append((port, process))
        for index, (port, process) in enumerate(nodes):
            wait_listening(port, process, f"node-{index}")

        listen = f"127.0.0.1:{args.port}"
        command, conf = prepare_nginx(
            work / "nginx", listen, [f"127.0.0.1:{port}" for port, _ in nodes]
        )
        nginx = spawn("nginx", command)
        wait_listening(args.port, nginx, "nginx")

        print(f"redis    {redis_url} (pid {redis.pid})")
        for index, (port, process) in enumerate(nodes):
            print(f"node-{index}   http://127.0.0.1:{port}/ (pid {process.pid})")
        print(f"nginx    http://{listen}/ (pid {nginx.pid}, {conf})")
        print(f"logs     {work}")
        print(f"\nOpen http://{listen}/ or: curl -N http://{listen}/sse")
        print("Ctrl-C stops everything.", flush=True)
        while True:
            for name, process in children:
                if process.poll() is not None:
                    print(
                        f"{name} (pid {process.pid}) exited with {process.returncode}",
                        file=sys.stderr,
                    )
                    raise KeyboardInterrupt
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping", file=sys.stderr)
        return 0
    except RuntimeError as error:
        print(f"run_cluster: {error}; logs in {work}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        # A second Ctrl-C (a terminal sends SIGINT to the whole group) must
        # not cut the stopping short and leave children running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        # nginx first, then the nodes (which leave the cluster through
        # Redis), Redis last.
        for kind in ("nginx", "node-", "redis"):
            stop([(n, p) for n, p in children if n.startswith(kind)])
        for log in logs:
            log.close()
        if args.keep:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
