#!/usr/bin/env python3
"""
The lagging-readers benchmark (issue 17): N readers that each read at about
1 MB/s behind a 10 MB/s broadcast, on a channel whose history covers it.

    python bench/lag_bench.py                # N = 0, 20, 1,000, one run each: 2-4 min
    python bench/lag_bench.py --readers 20 --runs 2
    python bench/lag_bench.py --write-results   # also puts its section in RESULTS.md

Two servers, side by side in the same run, each a fresh
C{bench/servers/lag_server.py} process on a free port of 127.0.0.1 for
every measurement:

- C{current}: the txgraphsse of this working tree (uncommitted changes
  included): a session past its C{max_backlog} on a channel with history
  keeps a cursor into the shared history and catches up as its reader
  drains;
- C{baseline}: the txgraphsse of commit C{--baseline} (8278e10), checked out
  with C{git worktree add} into C{/tmp/txg-<commit>} for the run and removed
  at its end: such a session is disconnected at 1 MiB of backlog.

The server script is this tree's for both; C{PYTHONPATH} picks the
library.  Each server has one channel, C{ChannelSpec("news",
history=--events)}, so history holds the whole burst, and the library's
defaults otherwise (C{max_backlog} 1 MiB, C{overflow="disconnect"}).

One measurement: the readers connect (C{GET /sse?channels=news}, HTTP/1.1),
the server says that all N streams are open, 1 s to settle, then the
server's RSS (C{VmRSS}) is read and its peak is reset (C{5} into
C{/proc/<pid>/clear_refs}), and one C{POST /control} starts the burst:
C{--events} (10,000) events of C{--size} (1,024) bytes of data, paced by
the server at C{--rate} (10,000) events a second, about 10 MB/s (each
10 ms tick of the server's clock sends what is due; C{--per-tick} caps a
tick's events, C{--notice-every k} adds a message on the default channel,
which keeps no history, to every k-th tick).  A reader stops C{--linger}
(1 s) after it has every event, so that what would come after the last one
is counted too, or when its connection ends, or at C{--timeout} (120 s)
after the burst began; the window ends then, and not before the burst has
ended.  Then the server's peak RSS (C{VmHWM} since the reset, and the
largest C{VmRSS} that a sampler read every 20 ms) gives its growth: peak
minus RSS before the burst.

The readers are raw TCP clients in C{--per-process} (250) readers per
client process, this script run with C{--child}: non-blocking sockets,
every C{--tick} (20 ms) each reader's allowance grows by C{--read-rate}
(1,000,000) bytes a second times the time passed, capped at one
C{--bufsize} (64 KiB) buffer, and it reads at most its allowance into that
buffer.  Each undoes the chunked framing and counts, on its one connection,
every C{news} event by its C{n}: in order, duplicates or gaps, C{reset} and
C{missed} events, the notices, and how the connection ended.  It writes
C{bench/out/RESULTS-lag.md} and C{bench/out/lag-results-<time>.json};
C{--write-results} also puts the report in C{bench/RESULTS.md}, in place of
its section under L{HEADING}.  The server's, the readers'
and the rest of the machine's CPU over the window are reported too.

Every process it starts is stopped by its PID; every phase is bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import errno
import http.client
import json
import math
import os
import platform
import re
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
RESULTS = BENCH / "RESULTS.md"
SERVER = BENCH / "servers" / "lag_server.py"
HEADING = "## (f) Lagging readers (issue 17)"
MIB = 1 << 20

#: The news events' n, from their data (the pad is all "x": no false match).
NEWS_N = re.compile(rb'data: \{"n":(\d+),')
#: The default channel's notices (--notice-every), by number.
NOTICE = re.compile(rb"data: notice (\d+)")


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- readers


class Reader:
    """
    One lagging reader on one connection: reads what its allowance lets
    it, undoes the chunked framing, and counts the news events by C{n}.
    """

    __slots__ = (
        "again",
        "allow",
        "bytes",
        "done_t",
        "dups",
        "end",
        "events",
        "expected",
        "first_t",
        "hdr",
        "head",
        "in_order",
        "last_t",
        "left",
        "lost",
        "missed",
        "notes",
        "notices",
        "resets",
        "sock",
        "status",
        "tail",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.allow = 0.0
        self.head = b""
        self.status = 0
        self.left = 0  # > 0: chunk bytes to come; < 0: CRLF bytes to skip
        self.hdr = b""
        self.tail = b""
        self.expected = 0
        self.events = self.in_order = self.dups = self.lost = 0
        self.resets = self.missed = 0
        self.notices: list[int] = []
        self.bytes = 0
        self.first_t = self.last_t = self.done_t = 0.0
        self.end: str | None = None
        self.notes: list[str] = []
        # The run of duplicates being read: first, last, the newest before.
        self.again: list[int] = []

    def finish(self, end: str) -> None:
        self.end = end
        with contextlib.suppress(OSError):
            self.sock.close()

    def feed(self, data: bytes, now: float, count: int) -> None:
        self.bytes += len(data)
        if not self.status:
            self.head += data
            head, sep, rest = self.head.partition(b"\r\n\r\n")
            if not sep:
                return
            self.status = int(head.split(b" ", 2)[1])
            self.head = b""
            if self.status != 200:
                self.finish(f"status {self.status}")
                return
            data = rest
        parts = []
        pos = 0
        size = len(data)
        while pos < size:
            left = self.left
            if left > 0:
                take = min(left, size - pos)
                parts.append(data[pos : pos + take])
                pos += take
                self.left = left - take or -2
            elif left < 0:
                skip = min(-left, size - pos)
                pos += skip
                self.left = left + skip
            else:
                if self.hdr:
                    data = self.hdr + data[pos:]
                    self.hdr = b""
                    pos, size = 0, len(data)
                end = data.find(b"\r\n", pos)
                if end < 0:
                    self.hdr = data[pos:]
                    break
                length = int(data[pos:end].split(b";")[0], 16)
                pos = end + 2
                if length == 0:
                    self.events_of(b"".join(parts), now, count)
                    self.finish("ended")
                    return
                self.left = length
        if parts:
            self.events_of(b"".join(parts), now, count)

    def events_of(self, text: bytes, now: float, count: int) -> None:
        block = self.tail + text if self.tail else text
        cut = block.rfind(b"\n\n")
        if cut < 0:
            self.tail = block
            return
        self.tail = block[cut + 2 :]
        whole = block[: cut + 2]
        if b"event: reset\n" in whole:
            self.resets += whole.count(b"event: reset\n")
            self.note(f"reset after n={self.expected - 1}")
        if b"event: missed\n" in whole:
            self.missed += whole.count(b"event: missed\n")
            self.note(f"missed after n={self.expected - 1}")
        if b"data: notice " in whole:
            self.notices.extend(int(k) for k in NOTICE.findall(whole))
        found = NEWS_N.findall(whole)
        if not found:
            return
        if not self.events:
            self.first_t = now
        self.last_t = now
        numbers = list(map(int, found))
        self.events += len(numbers)
        first = self.expected
        if numbers == list(range(first, first + len(numbers))):
            self.expected += len(numbers)
            self.in_order += len(numbers)
            if self.again:
                self.flush_again()
        else:
            for n in numbers:
                if n == self.expected:
                    self.expected += 1
                    self.in_order += 1
                    self.flush_again()
                elif n < self.expected:
                    self.dups += 1
                    again = self.again
                    if again and n == again[1] + 1:
                        again[1] = n
                    else:
                        self.flush_again()
                        self.again = [n, n, self.expected - 1]
                else:
                    self.flush_again()
                    self.lost += n - self.expected
                    self.note(f"n={self.expected}..{n - 1} missing")
                    self.expected = n + 1
        if self.expected >= count and not self.done_t:
            # It has them all: it reads on for --linger seconds, for what
            # would come after the last event (a duplicate, a notice).
            self.done_t = now

    def flush_again(self) -> None:
        again = self.again
        if again:
            self.note(f"n={again[0]}..{again[1]} again after n={again[2]}")
            self.again = []

    def note(self, text: str) -> None:
        if len(self.notes) < 5:
            self.notes.append(text)

    def result(self, count: int) -> dict[str, Any]:
        self.flush_again()
        return {
            "events": self.events,
            "in_order": self.in_order,
            "dups": self.dups,
            "lost": self.lost + max(0, count - self.expected),
            "resets": self.resets,
            "missed": self.missed,
            "notices": self.notices,
            "bytes": self.bytes,
            "first_t": self.first_t,
            "done_t": self.done_t,
            "last_t": self.last_t,
            "end": self.end,
            "status": self.status,
            "notes": self.notes,
        }


def child(args: argparse.Namespace) -> int:
    """
    C{--child}: C{--n} readers on one process.  Prints C{OPEN <n>} once
    they are connected, then reads; C{GO <deadline>} on stdin starts the
    clock of the burst (and its deadline), EOF or C{STOP} ends it.  Prints
    one JSON line: every reader's counts and this process's CPU.
    """
    readers = []
    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Accept: text/event-stream\r\n\r\n"
    ).encode()
    for _ in range(args.n):
        sock = socket.create_connection(("127.0.0.1", args.port), timeout=30)
        if args.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
        sock.sendall(request)
        sock.setblocking(False)
        readers.append(Reader(sock))
    print(f"OPEN {len(readers)}", flush=True)
    buffer = bytearray(args.bufsize)
    view = memoryview(buffer)
    rate = float(args.read_rate)
    cap = float(args.bufsize)
    count = args.count
    active = list(readers)
    hard = time.monotonic() + args.max_seconds
    deadline = math.inf
    go_cpu = None
    longest_tick = 0.0
    stdin = sys.stdin.buffer
    last = time.monotonic()
    while active:
        now = time.monotonic()
        if now >= hard or now >= deadline:
            for r in active:
                r.finish("timeout")
            break
        add = rate * (now - last)
        last = now
        still = []
        for r in active:
            if r.done_t and now - r.done_t >= args.linger:
                r.finish("done")
                continue
            allow = r.allow + add
            r.allow = allow = allow if allow < cap else cap
            if allow >= 1.0:
                try:
                    got = r.sock.recv_into(buffer, int(allow))
                except BlockingIOError:
                    still.append(r)
                    continue
                except OSError as e:
                    r.finish(errno.errorcode.get(e.errno or 0, f"error {e.errno}"))
                    continue
                if got == 0:
                    r.finish("eof")
                    continue
                r.allow -= got
                r.feed(bytes(view[:got]), now, count)
                if r.end is not None:
                    continue
            still.append(r)
        active = still
        spent = time.monotonic() - now
        longest_tick = max(longest_tick, spent)
        wait = max(0.0, args.tick - spent)
        ready, _, _ = select.select([stdin], [], [], wait)
        if ready:
            line = stdin.readline()
            if line.startswith(b"GO "):
                deadline = float(line.split()[1])
                go_cpu = time.process_time()
                longest_tick = 0.0
            elif not line or line.startswith(b"STOP"):
                for r in active:
                    r.finish("stopped")
                break
    cpu = time.process_time()
    print(
        json.dumps(
            {
                "readers": [r.result(count) for r in readers],
                "cpu_s": cpu - (go_cpu if go_cpu is not None else 0.0),
                "longest_tick_s": longest_tick,
            }
        ),
        flush=True,
    )
    return 0


# ---------------------------------------------------------------- the server


def proc_status(pid: int) -> dict[str, int]:
    """
    C{VmRSS} and C{VmHWM} of C{pid}, in bytes.
    """
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0]) * 1024
    return out


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """
    CPU seconds the whole machine has spent busy (all cores, C{/proc/stat}).
    """
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(f) for f in fields[:8]
    )
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """
    Reads a process's C{VmRSS} every C{interval} seconds; keeps the largest
    and when it was seen.
    """

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.peak_t = 0.0
        self.samples = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            try:
                rss = proc_status(self.pid)["VmRSS"]
            except (OSError, KeyError):
                return
            self.samples += 1
            if rss > self.peak:
                self.peak, self.peak_t = rss, time.monotonic()
            self._done.wait(self.interval)

    def stop(self) -> None:
        self._done.set()
        self.join(5)


class Server:
    """
    One C{lag_server.py} process on the txgraphsse of C{tree}, stopped by
    its PID.
    """

    def __init__(self, name: str, tree: Path, history: int, keepalive: float) -> None:
        self.name = name
        self.tree = tree
        self.history = history
        self.keepalive = keepalive
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self, timeout: float = 30.0) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.tree)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        OUT.mkdir(exist_ok=True)
        self.stderr = (OUT / f"lag-server-{self.name}.stderr").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(SERVER),
                "--history",
                str(self.history),
                "--keepalive",
                str(self.keepalive),
            ],
            cwd=BENCH,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.port:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                if line.startswith(b"READY "):
                    self.port = int(line.split()[1])
                elif not line:
                    break
            if self.proc.poll() is not None:
                break
        if not self.port:
            self.stop()
            raise RuntimeError(f"{self.name} server did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def control(self, body: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(
                "POST",
                "/control",
                json.dumps(body),
                {"Content-Type": "application/json"},
            )
            answer: dict[str, Any] = json.loads(conn.getresponse().read())
            return answer
        finally:
            conn.close()

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
        self.stderr.close()
        self.proc = None


# ---------------------------------------------------------------- one measurement


def spawn_readers(port: int, n: int, args: argparse.Namespace) -> list[Any]:
    children = []
    left = n
    while left > 0:
        k = min(left, args.per_process)
        left -= k
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            "--port",
            str(port),
            "--n",
            str(k),
            "--count",
            str(args.events),
            "--read-rate",
            str(args.read_rate),
            "--bufsize",
            str(args.bufsize),
            "--tick",
            str(args.tick),
            "--linger",
            str(args.linger),
            "--rcvbuf",
            str(args.rcvbuf),
            "--max-seconds",
            str(args.timeout + 120),
        ]
        OUT.mkdir(exist_ok=True)
        with (OUT / "lag-readers.stderr").open("ab") as stderr:
            children.append(
                subprocess.Popen(
                    cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
                )
            )
    return children


def collect(proc: subprocess.Popen[bytes], into: list[bytes]) -> threading.Thread:
    """
    Read C{proc}'s stdout to its end in a thread (its stdin stays open: the
    reader process takes EOF there as the end of the burst).
    """

    def read() -> None:
        assert proc.stdout is not None
        into.append(proc.stdout.read())

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def stop_children(children: list[Any]) -> None:
    for proc in children:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()


def measure(
    name: str, tree: Path, n: int, run: int, args: argparse.Namespace
) -> dict[str, Any]:
    server = Server(name, tree, args.events, args.keepalive)
    server.start()
    children: list[Any] = []
    record: dict[str, Any] = {"server": name, "readers": n, "run": run}
    try:
        status = server.control({"scenario": "status"})
        record["library"] = status["txgraphsse"]
        children = spawn_readers(server.port, n, args)
        deadline = time.monotonic() + 60
        for proc in children:
            assert proc.stdout is not None
            line = b""
            while time.monotonic() < deadline and not line.startswith(b"OPEN"):
                if proc.poll() is not None:
                    raise RuntimeError(
                        "a reader process failed: see lag-readers.stderr"
                    )
                ready, _, _ = select.select([proc.stdout], [], [], 0.5)
                if ready:
                    line = proc.stdout.readline()
        raw: list[list[bytes]] = [[] for _ in children]
        threads = [
            collect(proc, into) for proc, into in zip(children, raw, strict=True)
        ]
        while time.monotonic() < deadline:
            status = server.control({"scenario": "status"})
            if status["sessions"] >= n:
                break
            time.sleep(0.2)
        record["opened"] = status["sessions"]
        time.sleep(args.settle)
        pid = server.pid
        before = proc_status(pid)["VmRSS"]
        reset_peak = True
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            reset_peak = False
        sampler = Sampler(pid)
        sampler.start()
        cpu0 = cpu_of(pid)
        busy0 = machine_busy()
        t0 = time.monotonic()
        server.control(
            {
                "scenario": "burst",
                "count": args.events,
                "size": args.size,
                "rate": args.rate,
                "per_tick": args.per_tick,
                "notice_every": args.notice_every,
            }
        )
        for proc in children:
            proc.stdin.write(f"GO {t0 + args.timeout}\n".encode())
            proc.stdin.flush()
        outputs = []
        for proc, thread, into in zip(children, threads, raw, strict=True):
            remaining = max(1.0, t0 + args.timeout + 30 - time.monotonic())
            proc.wait(timeout=remaining)
            thread.join(30)
            if proc.returncode != 0 or not into:
                raise RuntimeError("a reader process failed: see lag-readers.stderr")
            outputs.append(json.loads(into[0].decode().strip().splitlines()[-1]))
        # Readers that were cut off may be gone before the burst ends: the
        # window always takes in the whole burst, so that the history is
        # all there in every server's peak.
        while time.monotonic() < t0 + args.timeout:
            status = server.control({"scenario": "status"})
            if status["finished"] is not None:
                break
            time.sleep(0.1)
        end = status["finished"]
        if end is not None and time.monotonic() < end + args.settle:
            time.sleep(end + args.settle - time.monotonic())
        t1 = time.monotonic()
        status = server.control({"scenario": "status"})
        server_cpu = cpu_of(pid) - cpu0
        busy = machine_busy() - busy0
        sampler.stop()
        hwm = proc_status(pid)["VmHWM"]
        peak = max(sampler.peak, hwm if reset_peak else 0)
        readers = [r for out in outputs for r in out["readers"]]
        client_cpu = sum(out["cpu_s"] for out in outputs)
        record.update(
            rss_before=before,
            rss_peak=peak,
            rss_hwm=hwm if reset_peak else None,
            rss_sampled_peak=sampler.peak,
            peak_at_s=(sampler.peak_t - t0) if sampler.peak_t else None,
            growth=peak - before,
            window_s=t1 - t0,
            server_cpu_s=server_cpu,
            client_cpu_s=client_cpu,
            other_cores=max(0.0, busy - server_cpu - client_cpu) / (t1 - t0),
            longest_tick_s=max((o["longest_tick_s"] for o in outputs), default=0.0),
            burst_s=(
                status["finished"] - status["started"]
                if status["finished"] is not None
                else None
            ),
            burst_late_s=(status["started"] - t0) if status["started"] else None,
            sent=status["sent"],
            notices_sent=status.get("notices", 0),
            event_bytes=status["event_bytes"],
            counters=status["counters"],
            reader_results=readers,
            t0=t0,
        )
    finally:
        stop_children(children)
        server.stop()
    derive(record, args)
    return record


def derive(rec: dict[str, Any], args: argparse.Namespace) -> None:
    readers = rec["reader_results"]
    count = args.events
    complete = [
        r
        for r in readers
        if r["end"] == "done"
        and r["in_order"] == count
        and r["dups"] == 0
        and r["lost"] == 0
        and r["resets"] == 0
        and r["missed"] == 0
    ]
    rec["complete"] = len(complete)
    rec["delivered"] = sum(r["in_order"] for r in readers)
    rec["expected"] = count * rec["readers"]
    rec["lost"] = sum(r["lost"] for r in readers)
    rec["dups"] = sum(r["dups"] for r in readers)
    rec["resets"] = sum(r["resets"] for r in readers)
    rec["missed"] = sum(r["missed"] for r in readers)
    rec["notices"] = sum(len(r["notices"]) for r in readers)
    sent = list(range(rec.get("notices_sent", 0)))
    for r in readers:
        if r["notices"] != sent:
            missing = sorted(set(sent) - set(r["notices"]))
            r["notes"].append(f"notices {r['notices']} (missing {missing})")
    ends: dict[str, int] = {}
    for r in readers:
        ends[r["end"]] = ends.get(r["end"], 0) + 1
    rec["ends"] = ends
    rec["disconnects"] = sum(v for k, v in ends.items() if k in ("eof", "ended"))
    rec["disconnects"] += sum(
        v for k, v in ends.items() if k.startswith(("error", "E"))
    )
    done_at = [r["done_t"] - rec["t0"] for r in complete]
    rec["last_done_s"] = max(done_at) if done_at else None
    rates = [
        (r["bytes"] / (r["done_t"] - r["first_t"]))
        for r in complete
        if r["done_t"] > r["first_t"]
    ]
    rec["read_rate_median"] = statistics.median(rates) if rates else None
    history = count * rec["event_bytes"]
    rec["history_bytes"] = history
    rec["target"] = target_of(rec["readers"], history)
    # The same anomalies in many readers: once, with how many had them.
    grouped: dict[str, int] = {}
    for r in readers:
        if r["notes"]:
            key = "; ".join(r["notes"])
            grouped[key] = grouped.get(key, 0) + 1
    rec["notes"] = [f"{k} ({v} readers)" for k, v in grouped.items()][:10]


def target_of(readers: int, history: int) -> int | None:
    """
    The issue's bound on RSS growth: the history plus 24 MiB for 20
    readers, plus 10% for 1,000.
    """
    if readers == 20:
        return history + 24 * MIB
    if readers == 1000:
        return history + history // 10
    return None


# ---------------------------------------------------------------- the report


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:,.1f}"


def secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def machine() -> dict[str, str]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(
                cmd, capture_output=True, text=True, timeout=30, cwd=ROOT
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "-"

    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    dirty = out(["git", "status", "--porcelain", "txgraphsse"])
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "txgraphsse": out(["git", "rev-parse", "--short", "HEAD"])
        + (" (with uncommitted changes)" if dirty else ""),
    }


def verdict(rec: dict[str, Any]) -> str:
    target = rec["target"]
    if target is None:
        return "-"
    return "yes" if rec["growth"] <= target else "**no**"


def report(
    records: list[dict[str, Any]],
    args: argparse.Namespace,
    command: str,
    took: float,
    labels: dict[str, str],
) -> str:
    info = machine()
    event_bytes = records[0]["event_bytes"] if records else 0
    history = args.events * event_bytes
    lines = [
        HEADING,
        "",
        f"Measured by `bench/lag_bench.py` on {time.strftime('%Y-%m-%d %H:%M')}"
        f" (took {took / 60:.1f} min), {info['nproc']} cores ({info['cpu']},"
        f" Linux {info['kernel']}, Python {info['python']}), nothing pinned: the"
        " server, the reader processes and whatever else the machine was"
        " running (other sessions of the project) share the two cores, and"
        ' "other processes" says how much the rest took in each window.'
        " Command:",
        "",
        f"    {command}",
        "",
        f"Readers at {args.read_rate / 1e6:g} MB/s each (raw TCP, a"
        f" {args.bufsize // 1024} KiB buffer, {args.per_process} readers a"
        f" process) behind a broadcast of {args.events:,} events of"
        f" {args.size:,} bytes of data ({event_bytes:,} bytes on the wire) at"
        f" {args.rate:,.0f} events/s (about"
        f" {args.rate * event_bytes / 1e6:.0f} MB/s), on"
        f' `ChannelSpec("news", history={args.events})`: the history holds'
        f" the whole burst, {mib(history)} MiB of events on the wire. Servers:",
        "",
    ]
    for name, label in labels.items():
        lines.append(f"- **{name}**: {label}")
    lines += [
        "",
        "A reader is *complete* when it got every event, once and in order, on"
        " its one connection, and no `reset` or `missed`. RSS growth is the"
        " server's peak RSS during the burst and the catch-up (`VmHWM` after a"
        " reset through `clear_refs`, and `VmRSS` sampled every 20 ms) minus"
        " its RSS just before the burst. Targets (issue 17): growth <= history"
        f" + 24 MiB ({mib(history + 24 * MIB)} MiB) for 20 readers, <= history"
        f" + 10% ({mib(history + history // 10)} MiB) for 1,000. The 0-reader"
        " row is what the history itself costs the process.",
        "",
    ]
    by_n: dict[int, list[dict[str, Any]]] = {}
    for rec in records:
        by_n.setdefault(rec["readers"], []).append(rec)
    for n, recs in by_n.items():
        lines += [
            f"### {n:,} readers",
            "",
            "| server | run | complete readers | events in order / expected"
            " | lost | duplicates | resets | disconnects | burst took s"
            " | RSS before MiB"
            " | RSS growth MiB | growth - history MiB | target met"
            " | last reader done s | read rate MB/s (median) | server CPU s"
            " | readers' CPU s | other processes, cores |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for rec in recs:
            rate = rec["read_rate_median"]
            lines.append(
                f"| {rec['server']} | {rec['run']} | {rec['complete']:,}/{n:,}"
                f" | {rec['delivered']:,} / {rec['expected']:,}"
                f" | {rec['lost']:,} | {rec['dups']:,} | {rec['resets']:,}"
                f" | {rec['disconnects']:,} | {secs(rec['burst_s'])}"
                f" | {mib(rec['rss_before'])}"
                f" | {mib(rec['growth'])} | {mib(rec['growth'] - rec['history_bytes'])}"
                f" | {verdict(rec)} | {secs(rec['last_done_s'])}"
                f" | {'-' if rate is None else f'{rate / 1e6:.2f}'}"
                f" | {rec['server_cpu_s']:.1f} | {rec['client_cpu_s']:.1f}"
                f" | {rec['other_cores']:.2f} |"
            )
        lines.append("")
        current = [r for r in recs if r["server"] == "current"]
        baseline = [r for r in recs if r["server"] == "baseline"]
        if n and current and baseline:
            c = statistics.median(r["delivered"] for r in current)
            b = statistics.median(r["delivered"] for r in baseline)
            gc = statistics.median(r["growth"] for r in current)
            gb = statistics.median(r["growth"] for r in baseline)
            lines += [
                f"current against baseline: {c / b if b else math.inf:.2f}x the"
                f" events delivered in order ({c:,.0f} against {b:,.0f} of"
                f" {n * args.events:,}); RSS growth {gc / gb if gb else math.inf:.2f}x"
                f" the baseline's ({mib(gc)} against {mib(gb)} MiB).",
                "",
            ]
    lines += ["<details><summary>every run</summary>", ""]
    for rec in records:
        counters = rec["counters"]
        wanted = (
            "lagging",
            "lag_resets",
            "slow_disconnects",
            "stalls",
            "events_dropped",
        )
        shown = ", ".join(f"{k}={counters[k]}" for k in wanted if k in counters)
        lines.append(
            f"- {rec['server']}, {rec['readers']:,} readers, run {rec['run']}:"
            f" opened {rec['opened']:,}; ends {rec['ends']}; burst sent"
            f" {rec['sent']:,} in {secs(rec['burst_s'])} s"
            + (
                f" (and {rec['notices_sent']} notices; readers got"
                f" {rec['notices']:,} of {rec['notices_sent'] * rec['readers']:,})"
                if rec["notices_sent"]
                else ""
            )
            + f"; RSS before"
            f" {mib(rec['rss_before'])}, peak {mib(rec['rss_peak'])} MiB (VmHWM"
            f" {mib(rec['rss_hwm'])}, sampled {mib(rec['rss_sampled_peak'])}, at"
            f" {secs(rec['peak_at_s'])} s); window {rec['window_s']:.1f} s;"
            f" longest reader tick {rec['longest_tick_s'] * 1000:.0f} ms;"
            f" server counters: {shown}"
            + (f"; first anomalies: {' / '.join(rec['notes'])}" if rec["notes"] else "")
        )
    lines += ["", "</details>", ""]
    return "\n".join(lines)


def write_section(text: str, path: Path = RESULTS) -> None:
    """
    Put C{text} in C{path} in place of its section under L{HEADING}, or at
    its end.
    """
    old = path.read_text() if path.exists() else ""
    start = old.find(HEADING)
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n"
    else:
        end = old.find("\n## ", start + len(HEADING))
        rest = "" if end < 0 else old[end:]
        new = old[:start] + text.rstrip("\n") + "\n" + rest
    path.write_text(new)


# ---------------------------------------------------------------- main


def raise_nofile(want: int = 16_384) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def git(*cmd: str) -> str:
    return subprocess.run(
        ["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", default="0,20,1000", help="N, comma-separated")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--servers", default="current,baseline")
    parser.add_argument("--baseline", default="8278e10", help="the older commit")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=1024, help="bytes of data")
    parser.add_argument("--rate", type=float, default=10_000, help="events/s")
    parser.add_argument(
        "--per-tick",
        type=int,
        default=0,
        help="at most this many events a 10 ms tick (0: what is due)",
    )
    parser.add_argument(
        "--notice-every",
        type=int,
        default=0,
        help="every k-th tick also a default-channel message (0: none)",
    )
    parser.add_argument("--read-rate", type=int, default=1_000_000, help="B/s")
    parser.add_argument("--bufsize", type=int, default=64 << 10)
    parser.add_argument("--tick", type=float, default=0.02)
    parser.add_argument(
        "--rcvbuf", type=int, default=0, help="SO_RCVBUF of each reader (0: kernel's)"
    )
    parser.add_argument(
        "--keepalive", type=float, default=15.0, help="the servers' (15 s)"
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=1.0,
        help="seconds a reader reads on once it has every event (1)",
    )
    parser.add_argument("--per-process", type=int, default=250)
    parser.add_argument("--settle", type=float, default=1.0)
    parser.add_argument(
        "--timeout", type=float, default=120, help="seconds a burst may take"
    )
    parser.add_argument("--write-results", action="store_true")
    # The reader processes.
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--path", default="/sse?channels=news", help=argparse.SUPPRESS)
    parser.add_argument(
        "--max-seconds", type=float, default=300, help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    raise_nofile()
    if args.child:
        return child(args)
    command = " ".join(["python bench/lag_bench.py", *sys.argv[1:]]).strip()
    started = time.monotonic()
    servers = args.servers.split(",")
    worktree = Path(f"/tmp/txg-{args.baseline}")
    made = False
    labels = {}
    try:
        if "baseline" in servers:
            if not worktree.exists():
                git("worktree", "add", "--detach", str(worktree), args.baseline)
                made = True
            full = git("-C", str(worktree), "log", "-1", "--format=%h %s")
            labels["baseline"] = (
                f"commit {full[:80]}..., from a `git worktree` in {worktree}:"
                " a session past `max_backlog` (1 MiB) is disconnected"
            )
        if "current" in servers:
            labels["current"] = (
                f"this tree ({machine()['txgraphsse']}): a session past"
                " `max_backlog` keeps a cursor into history and catches up"
            )
        trees = {"current": ROOT, "baseline": worktree}
        records = []
        for n in [int(x) for x in args.readers.split(",")]:
            for run in range(1, args.runs + 1):
                order = servers if run % 2 else servers[::-1]
                for name in order:
                    log(f"{name}: {n} readers, run {run}")
                    rec = measure(name, trees[name], n, run, args)
                    log(
                        f"  complete {rec['complete']}/{n}, delivered"
                        f" {rec['delivered']:,}/{rec['expected']:,}, lost"
                        f" {rec['lost']:,}, dups {rec['dups']}, disconnects"
                        f" {rec['disconnects']}, ends {rec['ends']}, growth"
                        f" {mib(rec['growth'])} MiB, window {rec['window_s']:.1f} s,"
                        f" library {rec['library']}"
                    )
                    records.append(rec)
    finally:
        if made:
            git("worktree", "remove", str(worktree))
    text = report(records, args, command, time.monotonic() - started, labels)
    OUT.mkdir(exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    for rec in records:
        rec.pop("reader_results")
    (OUT / f"lag-results-{stamp}.json").write_text(json.dumps(records, indent=1))
    (OUT / "RESULTS-lag.md").write_text(text)
    if args.write_results:
        write_section(text)
        log(f"wrote {HEADING!r} in {RESULTS}")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
