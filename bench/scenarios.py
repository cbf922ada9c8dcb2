"""The measured scenarios; each returns ``Row``s and never waits without a deadline.

* ``bare``: one reused aiosmtplib connection, N prebuilt messages, one sink (the limit).
* ``end_to_end``: N messages through add-messages (batches of 100) until the sink has
  N and the receiver N distinct ``sent`` items; then 500 single-message adds for latency.
* ``api_only``: the same ingest and latency on a proxy that does not send.
* ``idle``: 1,000 tenants and 2,000 accounts from the config file, nothing to send.
* ``isolation``: tenant B's 100 messages, alone and behind tenant A's 2,000 on a
  server that takes 100 ms per DATA (median of ``reps`` runs each).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import aiosmtplib

from bench.measure import Progress, Row, wait_for
from bench.profile import Profiler, summarise
from bench.proxyproc import Account, Proxy, Tenant
from bench.servers import HOST, Receiver, Sink

BATCH = 100
LATENCY_CALLS = 500
SENDER = "Bench <bench@bench.example>"
RECIPIENT = "ann@example.org"


def message(message_id: str, tenant_id: str) -> dict[str, Any]:
    return {
        "id": message_id,
        "tenant_id": tenant_id,
        "account_id": "main",
        "from": SENDER,
        "to": [RECIPIENT],
        "subject": f"Bench {message_id}",
        "body": f"Body of {message_id}.",
    }


def prebuilt(index: int) -> bytes:
    """The bytes the proxy would send for ``message(...)``: same headers, same size."""
    mid = f"m{index:06d}"
    return (
        f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: Bench {mid}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\nMessage-ID: <{mid}@bench.example>\r\n"
        f"MIME-Version: 1.0\r\nX-Genro-Mail-ID: {mid}\r\n"
        'Content-Type: text/plain; charset="utf-8"\r\nContent-Transfer-Encoding: 7bit\r\n'
        f"\r\nBody of {mid}.\r\n"
    ).encode()


# -- (a) the bare limit ------------------------------------------------------------------


def bare(n: int) -> Row:
    data = [prebuilt(i) for i in range(n)]
    with Sink() as sink:

        async def send_all() -> float:
            smtp = aiosmtplib.SMTP(hostname=HOST, port=sink.port, start_tls=False, timeout=30)
            await smtp.connect()
            started = time.perf_counter()
            for item in data:
                await smtp.sendmail("bench@bench.example", [RECIPIENT], item)
            elapsed = time.perf_counter() - started
            await smtp.quit()
            return elapsed

        elapsed = asyncio.run(send_all())
        row = Row("bare", n, 1, msg_s=n / elapsed, ratio=1.0)
        if sink.count != n:
            row.notes.append(f"sink counted {sink.count}/{n}")
    return row


# -- (b, c) end to end ---------------------------------------------------------------------


def end_to_end(
    n: int,
    tenants: int,
    bare_msg_s: float | None,
    profile_dir: Path | None = None,
    *,
    profile_mode: str = "active",
) -> Row:
    row = Row("end-to-end", n, tenants)
    with ExitStack() as stack:
        times_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-times-"))
        sink = stack.enter_context(Sink(times_path=str(Path(times_dir) / "accepted.tsv")))
        receiver = stack.enter_context(Receiver())
        ids = [f"t{k:02d}" for k in range(tenants)]
        proxy = stack.enter_context(
            Proxy(
                [Tenant(t, receiver.url) for t in ids],
                [Account(t, "main", sink.port) for t in ids],
                label=f"e2e-{n}-{tenants}",
            )
        )
        proxy.wait_healthy()
        batches = [
            [message(f"m{i:06d}", ids[i % tenants]) for i in range(s, min(s + BATCH, n))]
            for s in range(0, n, BATCH)
        ]
        profiler = None
        if profile_dir is not None:
            name = f"e2e-{n}-{tenants}t-{profile_mode}.txt"
            profiler = Profiler(proxy.pid, profile_dir / name, profile_mode)
            stack.callback(profiler.stop)  # idempotent; also on errors and Ctrl-C
        cpu_before = proxy.usage.cpu_s()
        started = time.monotonic()
        progress = Progress(lambda: sink.count)
        for batch in batches:
            proxy.add_messages(batch)
        row.ingest_msg_s = n / (time.monotonic() - started)
        counts: dict[str, Any] = {}

        def all_in() -> bool:
            nonlocal counts
            if sink.count < n:
                return False
            counts = receiver.counts()
            return counts["total_sent"] >= n

        deadline_s = max(120.0, n / 25)
        if wait_for(all_in, deadline_s, f"{n} messages in the sink and {n} sent reports"):
            finished = max(sink.last_ts, *counts["last_ts"].values())
            row.msg_s = n / (finished - started)
            row.ratio = row.msg_s / bare_msg_s if bare_msg_s else None
        else:
            counts = receiver.counts()
            seen = f"sink {sink.count}/{n}, reports {counts['total_sent']}/{n}"
            row.notes.append(f"DEADLINE {deadline_s:.0f}s: {seen}")
        row.cpu_s = proxy.usage.cpu_s() - cpu_before
        progress.stop()
        deciles = " ".join(f"{rate:.0f}" for rate in progress.decile_rates(n))
        row.notes.append(f"CPU {1000 * row.cpu_s / n:.1f} ms/msg")
        row.notes.append(f"sink msg/s per tenth of N: {deciles}")
        row.notes.append(
            f"report calls {counts.get('calls', '?')} on {counts.get('connections', '?')} conns"
        )
        row.notes.append(report_latency_note(sink.accepted_times(), receiver.sent_times()))
        if profiler is not None and (raw := profiler.stop()) is not None:
            print(f"  profile {raw}:\n" + summarise(raw))
        row.add_p50_ms, row.add_p99_ms = add_latency(proxy, ids[0])
        row.peak_rss_mb = proxy.usage.peak_rss_mb()
        row.notes.append(f"threads {proxy.usage.threads()}")
    return row


def report_latency_note(accepted: dict[str, float], reported: dict[str, float]) -> str:
    """SMTP acceptance to report received, per message (SPEC §10.3 rule 4: p50 ≤ 200 ms)."""
    delays = sorted(1000 * (reported[i] - accepted[i]) for i in accepted.keys() & reported.keys())
    if not delays:
        return "report latency: no matched messages"
    p50 = delays[len(delays) // 2]
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    return f"report latency p50 {p50:.0f} ms, p99 {p99:.0f} ms ({len(delays)} msgs)"


def add_latency(proxy: Proxy, tenant_id: str, calls: int = LATENCY_CALLS) -> tuple[float, float]:
    """p50 and p99 in ms of ``calls`` sequential one-message add-messages calls."""
    return _percentiles(lambda i: proxy.add_messages([message(f"lat-{i:04d}", tenant_id)]), calls)


def health_latency(proxy: Proxy, calls: int = LATENCY_CALLS) -> tuple[float, float]:
    """The same for ``GET /health``: the HTTP, waitress and client cost every call pays."""
    return _percentiles(lambda _: proxy.session.get(proxy.url + "/health", timeout=10), calls)


def _percentiles(call: Callable[[int], object], calls: int) -> tuple[float, float]:
    samples = []
    for i in range(calls):
        started = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return cuts[49], cuts[98]


def api_only(n: int, profile_dir: Path | None = None, *, profile_mode: str = "active") -> Row:
    """Ingest and add latency of an API-only proxy (``start_active = false``): no delivery
    competes with the requests, so this is the API's own cost."""
    row = Row("api-only", n, 1)
    with Sink() as sink, Receiver() as receiver:
        tenant = Tenant("t00", receiver.url)
        with Proxy([tenant], [Account("t00", "main", sink.port)], "api", api_only=True) as proxy:
            proxy.wait_healthy()
            profiler = None
            if profile_dir is not None:
                name = f"api-{n}-{profile_mode}.txt"
                profiler = Profiler(proxy.pid, profile_dir / name, profile_mode)
            cpu_before = proxy.usage.cpu_s()
            started = time.monotonic()
            for s in range(0, n, BATCH):
                proxy.add_messages(
                    [message(f"m{i:06d}", "t00") for i in range(s, min(s + BATCH, n))]
                )
            row.ingest_msg_s = n / (time.monotonic() - started)
            row.cpu_s = proxy.usage.cpu_s() - cpu_before
            row.notes.append(f"ingest CPU {1000 * row.cpu_s / n:.2f} ms/msg")
            row.add_p50_ms, row.add_p99_ms = add_latency(proxy, "t00")
            p50, p99 = health_latency(proxy)
            row.notes.append(f"GET /health p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            if profiler is not None and (raw := profiler.stop()) is not None:
                print(f"  profile {raw} (ingest, then {LATENCY_CALLS} single adds):")
                print(summarise(raw))
            row.peak_rss_mb = proxy.usage.peak_rss_mb()
            if sink.count:
                row.notes.append(f"an API-only instance sent {sink.count} message(s)")
    return row


# -- idle footprint ----------------------------------------------------------------------


def idle(tenants: int = 1000, accounts_per_tenant: int = 2, settle_s: float = 10.0) -> Row:
    row = Row("idle", 0, tenants)
    with Sink() as sink:  # the accounts need a port; nothing is ever sent to it
        ids = [f"idle{k:04d}" for k in range(tenants)]
        accounts = [Account(t, f"a{j}", sink.port) for t in ids for j in range(accounts_per_tenant)]
        with Proxy([Tenant(t) for t in ids], accounts, label="idle") as proxy:
            startup_s = proxy.wait_healthy()
            cpu_before = proxy.usage.cpu_s()
            time.sleep(settle_s)  # the footprint after settling is the measurement itself
            row.cpu_s = proxy.usage.cpu_s() - cpu_before
            row.idle_rss_mb = proxy.usage.rss_mb()
            row.peak_rss_mb = proxy.usage.peak_rss_mb()
            row.notes += [
                f"{len(accounts)} accounts",
                f"threads {proxy.usage.threads()}",
                f"start-up {startup_s:.1f}s",
                f"RSS and CPU s after/over {settle_s:.0f}s idle",
            ]
    return row


# -- isolation ---------------------------------------------------------------------------


@dataclass
class Isolation:
    alone_s: list[float] = field(default_factory=list)
    loaded_s: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if not self.alone_s or not self.loaded_s:
            return None
        return statistics.median(self.loaded_s) / statistics.median(self.alone_s)


def isolation(reps: int = 3, backlog: int = 2000, quiet: int = 100) -> Isolation:
    result = Isolation()
    for rep in range(reps):
        for loaded in (False, True):
            taken = _tenant_b_time(loaded=loaded, backlog=backlog, quiet=quiet, result=result)
            if taken is not None:
                (result.loaded_s if loaded else result.alone_s).append(taken)
                print(f"  rep {rep + 1}: B {'loaded' if loaded else 'alone '} {taken:.3f}s")
    return result


def _tenant_b_time(*, loaded: bool, backlog: int, quiet: int, result: Isolation) -> float | None:
    """Seconds from B's add until its ``quiet`` messages are delivered and reported."""
    with ExitStack() as stack:
        slow = stack.enter_context(Sink(data_delay_s=0.1))
        fast = stack.enter_context(Sink())
        receiver = stack.enter_context(Receiver())
        proxy = stack.enter_context(
            Proxy(
                [Tenant("a", receiver.url), Tenant("b", receiver.url)],
                [Account("a", "main", slow.port), Account("b", "main", fast.port)],
                label="isolation",
            )
        )
        proxy.wait_healthy()
        if loaded:
            for start in range(0, backlog, BATCH):
                proxy.add_messages([message(f"a{i:05d}", "a") for i in range(start, start + BATCH)])
            if not wait_for(lambda: slow.count >= 1, 30, "tenant A's first delivery"):
                result.notes.append("A never started sending")
        started = time.monotonic()
        proxy.add_messages([message(f"b{i:05d}", "b") for i in range(quiet)])
        counts: dict[str, Any] = {}

        def b_done() -> bool:
            nonlocal counts
            if fast.count < quiet:
                return False
            counts = receiver.counts()
            return counts["sent"].get("b", 0) >= quiet

        if not wait_for(b_done, 60, f"tenant B's {quiet} messages delivered and reported"):
            result.notes.append(f"deadline: B sink {fast.count}/{quiet}")
            return None
        if loaded:
            result.notes.append(f"A delivered {slow.count} of {backlog} meanwhile")
        return max(fast.last_ts, counts["last_ts"]["b"]) - started
