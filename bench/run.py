#!/usr/bin/env python3
"""
The txgraphsse benchmark suite, in one command.

    python bench/run.py                 # full: 10,000 streams, 3 runs, all
    python bench/run.py --quick         # smoke test: 1,000 streams, 1 run
    python bench/run.py --scenarios a,b --servers txgraphsse,twisted-plain

It installs what it needs (gcc builds the C load client into bench/out/,
npm installs the Node peers into bench/node_modules, pip installs the Python
peer into the running interpreter's environment where it is missing), then
for every run, scenario and server: starts the server as its own process on
a free 127.0.0.1 port (pinned to CPU 0), runs the load client (pinned to CPU
1), and stops the server by its PID.  Every step is bounded in time.

The full, unfiltered run writes bench/RESULTS.md; a quick or filtered run
writes bench/out/RESULTS.partial.md (or --output).  Raw numbers of every run
go to bench/out/results-<time>.json.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import select
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
CLIENT = OUT / "loadclient"

#: Python peers, pinned; installed with pip only where missing.
PIP_PEERS = {
    "sse-starlette": ("sse_starlette", "3.7.0"),
    "uvicorn": ("uvicorn", "0.54.0"),
    "uvloop": ("uvloop", "0.23.0"),
    "httptools": ("httptools", "0.9.0"),
}
#: Node peers, pinned in bench/package.json.
NPM_PEERS = {"better-sse": "0.16.1", "graphscript": "0.3.12"}

SERVERS: dict[str, dict[str, Any]] = {
    "txgraphsse": {
        "cmd": [sys.executable, "servers/txgraphsse_server.py"],
        "python": True,
        "what": "txgraphsse (this repo): endpoint.send, JSON, ids, history=1000,"
        " no per-stream log lines",
    },
    "twisted-plain": {
        "cmd": [sys.executable, "servers/twisted_plain_server.py"],
        "python": True,
        "what": "plain Twisted: one request.write per session per event",
    },
    "better-sse": {
        "cmd": ["node", "servers/better_sse_server.js"],
        "python": False,
        "what": "better-sse 0.16.1 on Node http (Channel.broadcast, Session.push)",
    },
    "graphscript": {
        "cmd": ["node", "servers/graphscript_server.js"],
        "python": False,
        "what": "graphscript 0.3.12 SSEbackend (Node build; bundles better-sse 0.11)",
    },
    "sse-starlette": {
        "cmd": [sys.executable, "servers/sse_starlette_server.py"],
        "python": True,
        "what": "sse-starlette 3.7 + uvicorn (uvloop, httptools), a queue per client",
    },
}

SCENARIOS = {
    "a": "burst fan-out: N streams, 20 events of 64 bytes",
    "b": "sustained: N streams, 5 broadcasts/s for 5 s, 64 bytes each",
    "c": "idle memory per stream at N streams",
    "d": "accepting N streams (time until all are open)",
    "e": "calls: 100 sessions, server-to-client request and client-to-server run",
    "f": "targeted push: one event to each of N sessions by id",
}
#: The servers that take --nodelay (Twisted leaves Nagle's algorithm on).
TWISTED = ("txgraphsse", "twisted-plain")
#: Scenario (e) compares txgraphsse with the bare Twisted POST echo only.
CALL_SERVERS = ("txgraphsse", "twisted-plain")
#: The servers that take a JSON array of calls in one POST; (e) measures
#: them batched too, beside the others' unbatched calls.
BATCH_SERVERS = ("txgraphsse",)
#: Calls in each batched POST of (e): 10 calls in flight per session.
CALL_BATCH = 10


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", flush=True)


# ---------------------------------------------------------------- setup


def raise_nofile(want: int = 65536) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for limits in ((max(want, hard), max(want, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            break
        except (ValueError, OSError):
            continue
    log(f"RLIMIT_NOFILE now {resource.getrlimit(resource.RLIMIT_NOFILE)}")


def build_client() -> None:
    OUT.mkdir(exist_ok=True)
    source = BENCH / "loadclient.c"
    if CLIENT.exists() and CLIENT.stat().st_mtime >= source.stat().st_mtime:
        return
    cmd = ["gcc", "-O2", "-Wall", "-o", str(CLIENT), str(source)]
    log("building the load client: " + " ".join(cmd))
    subprocess.run(cmd, check=True, timeout=120)


def npm_install(needed: set[str]) -> None:
    if not needed:
        return
    missing = []
    for name in needed:
        meta = BENCH / "node_modules" / name / "package.json"
        try:
            version = json.loads(meta.read_text())["version"]
        except (OSError, ValueError, KeyError):
            version = None
        if version != NPM_PEERS[name]:
            missing.append(name)
    if not missing:
        return
    cmd = ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"]
    log(f"npm install in bench/ ({', '.join(missing)} missing)")
    subprocess.run(cmd, cwd=BENCH, check=True, timeout=600)


def pip_install(needed: bool) -> None:
    if not needed:
        return
    missing = []
    for dist, (module, version) in PIP_PEERS.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(f"{dist}=={version}")
    if not missing:
        return
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", *missing]
    log("pip install " + " ".join(missing))
    subprocess.run(cmd, check=True, timeout=600)


def source_hash() -> str:
    """
    A short hash of the txgraphsse package as it is on disk now: each run
    records it, so a report can tell when the code changed during a run.
    """
    digest = hashlib.sha256()
    for path in sorted((ROOT / "txgraphsse").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".js"):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=30, cwd=ROOT
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "-"

    npm_versions = {}
    for name in NPM_PEERS:
        try:
            meta = json.loads(
                (BENCH / "node_modules" / name / "package.json").read_text()
            )
            npm_versions[name] = meta["version"]
        except (OSError, ValueError, KeyError):
            npm_versions[name] = "-"
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": out(["node", "--version"]),
        "gcc": out(["gcc", "-dumpfullversion"]),
        "txgraphsse": out(["git", "rev-parse", "--short", "HEAD"])
        + (
            " (with uncommitted changes)"
            if out(["git", "status", "--porcelain", "txgraphsse"])
            else ""
        ),
        "twisted": version_of("twisted"),
        "sse-starlette": version_of("sse-starlette"),
        "starlette": version_of("starlette"),
        "uvicorn": version_of("uvicorn"),
        "uvloop": version_of("uvloop"),
        "httptools": version_of("httptools"),
        "better-sse": npm_versions["better-sse"],
        "graphscript": npm_versions["graphscript"],
    }


# ---------------------------------------------------------------- one run


def busy_cores(seconds: float = 1.0) -> float:
    """
    How many cores the machine kept busy over C{seconds} (all processes).
    """

    def sample() -> tuple[float, float]:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in fields]
        idle = v[3] + v[4]
        return sum(v[:8]) - idle, time.monotonic()

    (b0, t0) = sample()
    time.sleep(seconds)
    (b1, t1) = sample()
    return (b1 - b0) / os.sysconf("SC_CLK_TCK") / (t1 - t0)


def wait_quiet(limit: float, threshold: float = 0.2) -> float:
    """
    Wait (at most C{limit} seconds) until other processes leave the machine
    nearly idle; return the load last seen, in cores.
    """
    deadline = time.monotonic() + limit
    load = busy_cores()
    warned = False
    while load > threshold and time.monotonic() < deadline:
        if not warned:
            log(f"the machine is busy ({load:.2f} cores in use by others); waiting")
            warned = True
        load = busy_cores(2.0)
    return load


#: Scheduling priority of the server and the client (--nice).
NICE = 0


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    if cpu is None:
        return cmd
    return ["taskset", "-c", str(cpu), *cmd]


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    """
    Start a server or the client.  With --nice, in a session of its own,
    whose scheduler autogroup then gets that nice level: with autogroups
    on (Linux's default for desktops and this machine), a process's own
    nice value only counts against processes of its own group.
    """
    proc = subprocess.Popen(cmd, start_new_session=bool(NICE), **kwargs)
    if NICE:
        with contextlib.suppress(OSError):
            Path(f"/proc/{proc.pid}/autogroup").write_text(str(NICE))
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, proc.pid, NICE)
    return proc


class Server:
    """
    One server process, started and stopped by its PID.
    """

    def __init__(
        self, name: str, cpu: int | None, profile: str | None, extra: list[str]
    ) -> None:
        self.name = name
        self.extra = extra
        self.cpu = cpu
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.spy: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.stderr_path = OUT / f"server-{name}.stderr"

    def start(self, timeout: float = 30.0) -> None:
        spec = SERVERS[self.name]
        self.stderr = open(self.stderr_path, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = spawn(
            pinned([*spec["cmd"], *self.extra], self.cpu),
            cwd=BENCH,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            stdin=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(b"READY "):
                    self.port = int(line.split()[1])
                    break
                if not line:
                    break
            if self.proc.poll() is not None:
                break
        if not self.port:
            self.stop()
            raise RuntimeError(
                f"{self.name} did not start; see {self.stderr_path.relative_to(ROOT)}"
            )
        if self.profile and SERVERS[self.name]["python"]:
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            self.spy = subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(self.proc.pid),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--nonblocking",
                    "-o",
                    self.profile,
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        if self.spy is not None:
            try:
                self.spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.spy.kill()
                self.spy.wait(timeout=10)
        self.stderr.close()
        self.proc = None


def run_client(
    server: Server, args: list[str], timeout: float, cpu: int | None
) -> dict[str, Any]:
    assert server.proc is not None
    cmd = pinned(
        [str(CLIENT), "--port", str(server.port), "--pid", str(server.proc.pid), *args],
        cpu,
    )
    proc = spawn(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=30)
        raise
    if proc.returncode != 0 or not stdout.strip():
        raise RuntimeError(f"load client failed ({proc.returncode}): {stderr.strip()}")
    data: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return data


def control(body: dict[str, Any]) -> str:
    return json.dumps(body, separators=(",", ":"))


def measure(
    scenario: str, server: str, opts: argparse.Namespace
) -> list[dict[str, Any]]:
    """
    One run of one scenario against one server: a fresh server process.
    Returns one record per measured quantity set (two for (e)).
    """
    n = opts.streams
    timeout = opts.timeout
    records: list[dict[str, Any]] = []
    cpu_server, cpu_client = (0, 1) if opts.pin else (None, None)
    profile = None
    if opts.profile:
        profile = str(OUT / f"profile-{scenario}-{server}-{int(time.time())}.txt")
    extra = ["--nodelay"] if opts.tcp_nodelay and server in TWISTED else []
    srv = Server(server, cpu_server, profile, extra)
    srv.start()
    try:
        if scenario == "a":
            count = 20
            data = run_client(
                srv,
                [
                    "--streams",
                    str(n),
                    "--mode",
                    "stream",
                    "--settle",
                    "1",
                    "--control",
                    control({"scenario": "burst", "count": count, "size": 64}),
                    "--expect",
                    str(n * count),
                    "--timeout",
                    str(timeout),
                ],
                timeout + 60,
                cpu_client,
            )
            records.append(data)
        elif scenario == "b":
            rate, duration = 5, opts.sustained_s
            expect = n * int(rate * duration)
            data = run_client(
                srv,
                [
                    "--streams",
                    str(n),
                    "--mode",
                    "stream",
                    "--settle",
                    "1",
                    "--control",
                    control(
                        {
                            "scenario": "sustained",
                            "rate": rate,
                            "duration": duration,
                            "size": 64,
                        }
                    ),
                    "--expect",
                    str(expect),
                    "--timeout",
                    str(timeout + duration),
                ],
                timeout + duration + 60,
                cpu_client,
            )
            records.append(data)
        elif scenario == "cd":
            data = run_client(
                srv,
                [
                    "--streams",
                    str(n),
                    "--mode",
                    "idle",
                    "--settle",
                    "2",
                    "--timeout",
                    str(timeout),
                ],
                timeout + 60,
                cpu_client,
            )
            records.append(data)
        elif scenario == "f":
            data = run_client(
                srv,
                [
                    "--streams",
                    str(n),
                    "--mode",
                    "stream",
                    "--settle",
                    "1",
                    "--control",
                    control({"scenario": "targeted", "size": 64}),
                    "--expect",
                    str(n),
                    "--timeout",
                    str(timeout),
                ],
                timeout + 60,
                cpu_client,
            )
            records.append(data)
        elif scenario == "e":
            sessions = opts.call_sessions
            modes = ["s2c", "c2s"]
            if server in BATCH_SERVERS:
                modes.append("c2s-batch")
            if opts.call_modes:
                modes = [m for m in modes if m in opts.call_modes.split(",")]
            for mode in modes:
                extra = []
                if mode == "c2s-batch":
                    extra = ["--batch", str(CALL_BATCH)]
                if mode == "s2c":
                    extra = [
                        "--control",
                        control({"scenario": "calls_s2c"}),
                        "--control-stop",
                        control({"scenario": "stop"}),
                    ]
                data = run_client(
                    srv,
                    [
                        "--streams",
                        str(sessions),
                        "--mode",
                        mode.removesuffix("-batch"),
                        "--settle",
                        "0.5",
                        "--warmup",
                        "1",
                        "--duration",
                        str(opts.calls_s),
                        "--timeout",
                        str(timeout),
                        *extra,
                    ],
                    timeout + opts.calls_s + 60,
                    cpu_client,
                )
                data["call_mode"] = mode
                records.append(data)
    finally:
        srv.stop()
    for data in records:
        data["scenario"] = scenario
        data["server"] = server
        derive(data)
    return records


def derive(d: dict[str, Any]) -> None:
    """
    The reported quantities of one run.
    """
    delivered = d["delivered"]
    elapsed = d["elapsed_s"]
    d["complete"] = (
        d["failed"] == 0 and not d["timed_out"] and d["opened"] == d["streams"]
    )
    if d["mode"] in ("stream", "s2c", "c2s"):
        d["per_s"] = delivered / elapsed if elapsed > 0 and delivered else None
        d["cpu_us_per"] = d["server_cpu_s"] / delivered * 1e6 if delivered else None
        d["client_busy"] = d["client_cpu_s"] / elapsed if elapsed > 0 else None
        d["other_load"] = max(0.0, d["other_cpu_s"]) / elapsed if elapsed > 0 else None
    if d["mode"] == "idle":
        opened = d["opened"] or 1
        grow = d["rss_end_kib"] - d["rss_before_kib"]
        d["rss_kib_per_stream"] = grow / opened
        d["accept_s"] = d["connect_s"]
        d["accept_per_s"] = d["opened"] / d["connect_s"] if d["connect_s"] > 0 else None
        d["accept_cpu_us_per"] = d["connect_server_cpu_s"] / opened * 1e6
        connect = d["connect_s"]
        d["other_load"] = (
            max(0.0, d["connect_other_cpu_s"]) / connect if connect > 0 else None
        )


# ---------------------------------------------------------------- report

METRICS: dict[str, list[tuple[str, str, str, bool]]] = {
    # scenario -> [(key, label, format, higher_is_better)]
    "a": [
        ("per_s", "deliveries/s", "{:,.0f}", True),
        ("cpu_us_per", "server CPU µs/delivery", "{:.2f}", False),
        ("lat_p50_ms", "latency p50 ms", "{:.1f}", False),
        ("lat_p99_ms", "latency p99 ms", "{:.1f}", False),
    ],
    "b": [
        ("per_s", "deliveries/s", "{:,.0f}", True),
        ("cpu_us_per", "server CPU µs/delivery", "{:.2f}", False),
        ("lat_p50_ms", "latency p50 ms", "{:.1f}", False),
        ("lat_p99_ms", "latency p99 ms", "{:.1f}", False),
    ],
    "c": [
        ("rss_kib_per_stream", "RSS KiB/stream", "{:.1f}", False),
    ],
    "d": [
        ("accept_s", "time to open all, s", "{:.2f}", False),
        ("accept_per_s", "streams opened/s", "{:,.0f}", True),
        ("accept_cpu_us_per", "server CPU µs/stream", "{:.0f}", False),
    ],
    "e-s2c": [
        ("per_s", "server→client request round trips/s", "{:,.0f}", True),
        ("cpu_us_per", "server CPU µs/call", "{:.0f}", False),
    ],
    "e-c2s": [
        ("per_s", "client→server run calls/s", "{:,.0f}", True),
        ("cpu_us_per", "server CPU µs/call", "{:.0f}", False),
    ],
    "e-c2s-batch": [
        ("per_s", "client→server run calls/s", "{:,.0f}", True),
        ("cpu_us_per", "server CPU µs/call", "{:.0f}", False),
    ],
    "f": [
        ("per_s", "deliveries/s", "{:,.0f}", True),
        ("cpu_us_per", "server CPU µs/delivery", "{:.2f}", False),
        ("lat_p50_ms", "latency p50 ms", "{:.1f}", False),
        ("lat_p99_ms", "latency p99 ms", "{:.1f}", False),
    ],
}

TITLES = {
    "a": "(a) Burst fan-out: {n:,} streams, 20 events of 64 bytes",
    "b": "(b) Sustained: {n:,} streams, 5 broadcasts/s for {sus} s, 64 bytes each",
    "c": "(c) Idle memory: RSS growth / streams, at {n:,} streams",
    "d": "(d) Accepting {n:,} streams (client keeps ≤1,000 handshakes in flight)",
    "e-s2c": "(e) Calls, server→client: {calls} sessions, `run` round trips",
    "e-c2s": "(e) Calls, client→server: {calls} sessions, POSTed route calls",
    "e-c2s-batch": (
        "(e) Calls, client→server, batched: {calls} sessions, "
        + str(CALL_BATCH)
        + " calls in each POST (servers without batches: one per POST, as above)"
    ),
    "f": "(f) Targeted push: one 64-byte event to each of {n:,} sessions by id",
}


def group_key(rec: dict[str, Any]) -> list[str]:
    if rec["scenario"] == "cd":
        return ["c", "d"]
    if rec["scenario"] == "e":
        return [f"e-{rec['call_mode']}"]
    return [rec["scenario"]]


def fmt(value: float | None, pattern: str) -> str:
    if value is None:
        return "—"
    return pattern.format(value)


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def report(
    records: list[dict[str, Any]],
    opts: argparse.Namespace,
    info: dict[str, str],
    command: str,
    when: str,
    took_s: float | None,
) -> str:
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for rec in records:
        for key in group_key(rec):
            groups.setdefault(key, {}).setdefault(rec["server"], []).append(rec)
    lines: list[str] = []
    w = lines.append
    w("# txgraphsse benchmark results")
    w("")
    w("Measured by `bench/run.py` (see bench/README.md for what each scenario does")
    w(
        "and how it is measured). Every figure is the **median of "
        f"{opts.runs} run{'s' if opts.runs != 1 else ''}**, each against a fresh"
        " server process;"
    )
    pin = (
        "the server is pinned to CPU 0 and the C load client to CPU 1"
        if opts.pin
        else "nothing is pinned to a CPU"
    )
    w(pin + (f", both at nice {opts.nice}." if opts.nice else "."))
    w("Server CPU is utime+stime of the server's `/proc/<pid>/stat` over the")
    w('measured window, divided by what was delivered in it. "client CPU busy"')
    w("is the load client's own CPU over the window (far from 100%: the client is")
    w('not the bottleneck); "other processes" is the CPU that neither the server')
    w("nor the client used on the machine during the window, in cores (the")
    w("runner waits for the machine to be quiet before each run, but cannot stop")
    w("others from starting; a run with a high figure there is suspect).")
    w("Latency runs from the server's send call (the `t` each event carries) to")
    w("the event's arrival at the client's socket (the kernel's receive")
    w("timestamp), on one clock. Ratios are txgraphsse's advantage over each")
    w("peer: >1 means txgraphsse is faster, or cheaper, by that factor.")
    w("")
    w("Command:")
    w("")
    w(f"    {command}")
    w("")
    took = f", took {took_s / 60:.1f} min" if took_s is not None else ""
    w(f"Run on {when}{took}. Machine and versions:")
    w("")
    w("| | |")
    w("|---|---|")
    for key in (
        "nproc",
        "cpu",
        "kernel",
        "python",
        "node",
        "gcc",
        "txgraphsse",
        "twisted",
        "sse-starlette",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "better-sse",
        "graphscript",
    ):
        w(f"| {key} | {info.get(key, '-')} |")
    w("")
    sources = sorted({r["source"] for r in records if r.get("source")})
    if len(sources) == 1:
        w(f"The txgraphsse package hashed {sources[0]} in every run.")
        w("")
    elif sources:
        w(
            "**The txgraphsse package changed on disk during this run** (hashes "
            + ", ".join(sources)
            + "): its runs did not all measure the same code."
        )
        w("")
    w("Servers:")
    w("")
    for name in opts.servers:
        w(f"- **{name}**: {SERVERS[name]['what']}")
    w("")
    if "e-c2s-batch" in groups:
        # Beside the batched calls, the peers' own, one call per POST.
        for server, recs in groups.get("e-c2s", {}).items():
            if server not in BATCH_SERVERS:
                groups["e-c2s-batch"].setdefault(server, recs)
    for key in ("a", "b", "c", "d", "e-s2c", "e-c2s", "e-c2s-batch", "f"):
        if key not in groups:
            continue
        by_server = groups[key]
        metrics = METRICS[key]
        w(
            "## "
            + TITLES[key].format(
                n=opts.streams, sus=opts.sustained_s, calls=opts.call_sessions
            )
        )
        w("")
        head = "| server | " + " | ".join(m[1] for m in metrics)
        head += " | complete runs"
        if key not in ("c", "d"):
            head += " | client CPU busy"
        head += " | other processes, cores |"
        w(head)
        w("|---" * (head.count("|") - 1) + "|")
        meds: dict[str, dict[str, float | None]] = {}
        for server in opts.servers:
            runs = by_server.get(server)
            if not runs:
                continue
            meds[server] = {m[0]: median([r.get(m[0]) for r in runs]) for m in metrics}
            complete = sum(1 for r in runs if r["complete"])
            row = f"| {server} | " + " | ".join(
                fmt(meds[server][m[0]], m[2]) for m in metrics
            )
            row += f" | {complete}/{len(runs)}"
            if key not in ("c", "d"):
                busy = median([r.get("client_busy") for r in runs])
                row += f" | {fmt(busy * 100 if busy is not None else None, '{:.0f}%')}"
            other = median([r.get("other_load") for r in runs])
            row += f" | {fmt(other, '{:.2f}')}"
            w(row + " |")
        w("")
        ours = meds.get("txgraphsse")
        peers = [s for s in meds if s != "txgraphsse"]
        if ours and peers:
            w(
                "txgraphsse compared with each peer"
                " (>1: txgraphsse is better by that factor):"
            )
            w("")
            w("| vs | " + " | ".join(m[1] for m in metrics) + " |")
            w("|---" * (len(metrics) + 1) + "|")
            for peer in peers:
                cells = []
                for m in metrics:
                    a, b = ours[m[0]], meds[peer][m[0]]
                    if a is None or b is None or a <= 0 or b <= 0:
                        cells.append("—")
                    else:
                        cells.append(f"{(a / b) if m[3] else (b / a):.2f}x")
                w(f"| {peer} | " + " | ".join(cells) + " |")
            w("")
        w("<details><summary>every run</summary>")
        w("")
        for server in opts.servers:
            for r in by_server.get(server, []):
                vals = ", ".join(f"{m[0]}={fmt(r.get(m[0]), m[2])}" for m in metrics)
                other = fmt(r.get("other_load"), "{:.2f}")
                w(
                    f"- {server} run {r.get('run', '?')}: {vals}; "
                    f"opened {r['opened']}/{r['streams']}, "
                    f"delivered {r['delivered']:,}/{r['expected']:,}; "
                    f"other processes {other} cores"
                    + (", incomplete" if not r["complete"] else "")
                )
        w("")
        w("</details>")
        w("")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: 1,000 streams, 1 run, short windows",
    )
    parser.add_argument(
        "--scenarios",
        default="a,b,c,d,e,f",
        help="comma-separated subset of a,b,c,d,e,f",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated subset of " + ",".join(SERVERS),
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per measurement (3)"
    )
    parser.add_argument("--streams", type=int, default=None, help="streams (10,000)")
    parser.add_argument("--call-sessions", type=int, default=100)
    parser.add_argument("--calls-seconds", dest="calls_s", type=float, default=None)
    parser.add_argument(
        "--call-modes",
        default=None,
        help="only these of (e)'s parts, comma-separated: s2c, c2s, c2s-batch",
    )
    parser.add_argument("--sustained-seconds", dest="sustained_s", type=int, default=5)
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds one client phase may take"
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin server and client to CPUs 0 and 1",
    )
    parser.add_argument("--no-install", dest="install", action="store_false")
    parser.add_argument(
        "--tcp-nodelay",
        action="store_true",
        help="set TCP_NODELAY in the Twisted servers (off by default)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait, before each run, for other processes"
        " to leave the machine idle (10; 3 with --quick; 0: do not wait)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run server and client at this nice level (e.g. -10 on a machine"
        " that other work shares; needs root for a negative value)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record py-spy profiles of the Python servers into bench/out/",
    )
    parser.add_argument(
        "--output", default=None, help="where to write the Markdown report"
    )
    parser.add_argument(
        "--report-from",
        default=None,
        metavar="JSON",
        help="write the report again from a raw results file; measure nothing",
    )
    opts = parser.parse_args()
    global NICE
    NICE = opts.nice

    opts.runs = opts.runs or (1 if opts.quick else 3)
    opts.streams = opts.streams or (1000 if opts.quick else 10_000)
    opts.calls_s = opts.calls_s or (2.0 if opts.quick else 5.0)
    if opts.quiet_wait is None:
        opts.quiet_wait = 3.0 if opts.quick else 10.0
    scenarios = [s.strip() for s in opts.scenarios.split(",") if s.strip()]
    servers = [s.strip() for s in opts.servers.split(",") if s.strip()]
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    for s in servers:
        if s not in SERVERS:
            parser.error(f"unknown server {s!r}")
    opts.servers = servers
    if (opts.pin and (os.cpu_count() or 1) < 2) or not shutil.which("taskset"):
        opts.pin = False
    full = (
        not opts.quick
        and set(scenarios) == set(SCENARIOS)
        and set(servers) == set(SERVERS)
        and opts.runs >= 3
        and opts.streams == 10_000
    )
    output = (
        Path(opts.output)
        if opts.output
        else (BENCH / "RESULTS.md" if full else OUT / "RESULTS.partial.md")
    )

    command = "python bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    started = time.monotonic()
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    if opts.report_from:
        return rerender(Path(opts.report_from), opts, output)
    OUT.mkdir(exist_ok=True)
    raise_nofile()
    build_client()
    if opts.install:
        npm_install({s for s in servers if s in NPM_PEERS})
        pip_install("sse-starlette" in servers)
    info = machine()
    log(
        "machine: "
        + ", ".join(
            f"{k}={info[k]}" for k in ("nproc", "cpu", "kernel", "python", "node")
        )
    )

    # c and d come from the same idle run.
    plan: list[str] = []
    for s in ("a", "b", "c", "d", "e", "f"):
        if s not in scenarios:
            continue
        key = "cd" if s in ("c", "d") else s
        if key not in plan:
            plan.append(key)

    records: list[dict[str, Any]] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw_path = OUT / f"results-{stamp}.json"
    failures = 0
    for run in range(opts.runs):
        for scenario in plan:
            for server in servers:
                if scenario == "e" and server not in CALL_SERVERS:
                    continue
                label = f"run {run + 1}/{opts.runs} scenario {scenario} {server}"
                before = wait_quiet(opts.quiet_wait) if opts.quiet_wait > 0 else -1.0
                source = source_hash()  # what the server is about to import
                try:
                    got = measure(scenario, server, opts)
                except (RuntimeError, subprocess.TimeoutExpired, ValueError) as error:
                    failures += 1
                    log(f"{label}: FAILED: {error}")
                    continue
                for d in got:
                    d["run"] = run + 1
                    d["source"] = source
                    d["load_before"] = before
                    records.append(d)
                    log(f"{label}: " + summary(d))
                save(raw_path, command, info, records, opts, when, None)
    took_s = time.monotonic() - started
    save(raw_path, command, info, records, opts, when, took_s)
    text = report(records, opts, info, command, when, took_s)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    log(f"raw results: {raw_path.relative_to(ROOT)}")
    log(
        f"report: {output.relative_to(ROOT) if output.is_relative_to(ROOT) else output}"
    )
    print()
    print(text)
    return 1 if failures else 0


#: What a raw results file keeps of the options, to write its report again.
SAVED_OPTIONS = ("runs", "streams", "pin", "nice", "sustained_s", "call_sessions")


def save(
    path: Path,
    command: str,
    info: dict[str, str],
    records: list[dict[str, Any]],
    opts: argparse.Namespace,
    when: str,
    took_s: float | None,
) -> None:
    options = {k: getattr(opts, k) for k in SAVED_OPTIONS}
    options["servers"] = opts.servers
    data = {
        "command": command,
        "when": when,
        "took_s": took_s,
        "options": options,
        "machine": info,
        "records": records,
    }
    path.write_text(json.dumps(data, indent=1))


def rerender(path: Path, opts: argparse.Namespace, output: Path) -> int:
    data = json.loads(path.read_text())
    records = data["records"]
    saved = data.get("options", {})
    for key, value in saved.items():
        setattr(opts, key, value)
    if "runs" not in saved:
        opts.runs = max(r.get("run", 1) for r in records)
    if "streams" not in saved:
        opts.streams = max(r["streams"] for r in records if r["scenario"] != "e")
    if "servers" not in saved:
        opts.servers = [s for s in SERVERS if any(r["server"] == s for r in records)]
    when = data.get("when") or datetime.datetime.fromtimestamp(
        path.stat().st_mtime
    ).strftime("%Y-%m-%d %H:%M")
    text = report(
        records, opts, data["machine"], data["command"], when, data.get("took_s")
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    log(f"report: {output}")
    return 0


def summary(d: dict[str, Any]) -> str:
    parts = [f"opened {d['opened']}/{d['streams']}"]
    if d["mode"] == "idle":
        parts.append(f"open in {d['connect_s']:.2f}s")
        parts.append(f"RSS {d['rss_kib_per_stream']:.1f} KiB/stream")
    else:
        parts.append(f"delivered {d['delivered']:,}/{d['expected']:,}")
        if d.get("per_s"):
            parts.append(f"{d['per_s']:,.0f}/s")
        if d.get("cpu_us_per"):
            parts.append(f"CPU {d['cpu_us_per']:.2f} µs each")
        if d["lat_p50_ms"] >= 0:
            parts.append(f"p50 {d['lat_p50_ms']:.1f} ms p99 {d['lat_p99_ms']:.1f} ms")
        if d.get("client_busy") is not None:
            parts.append(f"client busy {d['client_busy'] * 100:.0f}%")
    if d.get("other_load") is not None:
        parts.append(f"others {d['other_load']:.2f} cores")
    if not d["complete"]:
        parts.append("INCOMPLETE")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
