"""Several instances on one PostgreSQL database (SPEC §18.2, issue 9): K = 1, 2, 3.

For each K a fresh database in one throw-away cluster (``tests/fixtures/postgres.py``,
the suite's own helper: ``fsync=off``, so the figures are not those of a durable
server) gets K ``proxy serve`` processes started together from the same settings,
each with its own ``GMP_INSTANCE_ID``; they migrate the empty database themselves
under their advisory lock. N messages over 10 tenants (one account each, one sink,
one receiver) go in as add-messages batches of 100, round-robin over the instances;
the clock stops when the sink holds N and the receiver N distinct ``sent`` reports.

CPU seconds over that window are read for every proxy, the PostgreSQL server (the
postmaster, its live children and the children it has reaped), the sink, the
receiver and this client, since all of them share the machine's cores; what the
machine spent beyond that is other people's work, given as cores in the notes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from bench.measure import Row, wait_for
from bench.profile import Profiler, summarise
from bench.proxyproc import Account, Proxy, Tenant
from bench.scenarios import BATCH, end_to_end, message
from bench.servers import Receiver, Sink

INSTANCES = (1, 2, 3)
TENANTS = 10


@dataclass
class ScaleRow:
    instances: int
    n: int
    msg_s: float | None = None
    scaling: float | None = None  # msg/s of this K over msg/s of K = 1
    ingest_msg_s: float | None = None
    proxy_cpu_s: float | None = None
    postgres_cpu_s: float | None = None
    other_cpu_s: float | None = None  # the sink, the receiver and this client
    elapsed_s: float | None = None
    foreign_cores: float | None = None  # cores busy with other work on the machine meanwhile
    notes: list[str] = field(default_factory=list)

    @property
    def cores_busy(self) -> float | None:
        """Average cores kept busy by the proxies, PostgreSQL, sink, receiver and client."""
        parts = (self.proxy_cpu_s, self.postgres_cpu_s, self.other_cpu_s)
        if self.elapsed_s is None or any(p is None for p in parts):
            return None
        return sum(p or 0.0 for p in parts) / self.elapsed_s


@dataclass
class Scaling:
    """What ``run`` measured so far (filled in place, so an interrupted run keeps it)."""

    n: int
    tenants: int = TENANTS
    rows: list[ScaleRow] = field(default_factory=list)
    reference: Row | None = None  # the SQLite single-instance end-to-end run, same N
    notes: list[str] = field(default_factory=list)


class ProcessCpu:
    """User+system CPU seconds of a process, with ``tree`` of all its descendants too.

    A parent's ``children_*`` times hold the children it has waited for, so backends
    that end during the run are still counted; call ``cpu_s`` before and after.
    """

    def __init__(self, pid: int, *, tree: bool = False, name: str | None = None) -> None:
        self._process = psutil.Process(pid)
        self._tree = tree
        self._name = name

    def cpu_s(self) -> float:
        own = self._process.cpu_times()
        total = own.user + own.system
        if not self._tree:
            return float(total)
        total += own.children_user + own.children_system
        for child in self._process.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a backend may end in between
                if self._name is None or child.name() == self._name:
                    times = child.cpu_times()
                    total += times.user + times.system
        return float(total)


def machine_busy_s() -> float:
    """CPU seconds all cores spent on anything but idling (guest time is in user already)."""
    times = psutil.cpu_times()
    idle = times.idle + getattr(times, "iowait", 0.0)
    guest = getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    return float(sum(times) - idle - guest)


def postmaster_pid(data_dir: Path) -> int:
    """The first line of ``postmaster.pid`` (readable by all under ``runuser``)."""
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def run(
    scaling: Scaling,
    instances: tuple[int, ...] = INSTANCES,
    *,
    repeat: int = 1,
    reference: bool = True,
    profile_dir: Path | None = None,
    profile_mode: str = "active",
    report: Callable[[ScaleRow], None] = lambda row: None,
) -> Scaling:
    """Every K in ``instances`` on one cluster, then (``reference``) SQLite, one instance.

    ``repeat`` rounds go 1, 2, 3, 1, 2, 3, … so that other work on the machine falls on
    every K alike; each K keeps its median run by msg/s. ``scaling.rows`` is brought up
    to date after every run, so an interrupted run keeps what it measured.
    """
    # Imported here: only this scenario needs psycopg2 and the test helpers.
    from tests.fixtures.postgres import PostgresCluster  # noqa: PLC0415

    runs: dict[int, list[ScaleRow]] = {k: [] for k in instances}
    with ExitStack() as stack:
        cluster = PostgresCluster()
        stack.callback(cluster.stop)  # also when start() fails half way
        cluster.start()
        postgres = ProcessCpu(postmaster_pid(cluster.data), tree=True, name="postgres")
        for _ in range(repeat):
            for k in instances:
                url = cluster.create_database(empty=True)
                try:
                    row = _one(k, scaling.n, url, postgres, (profile_dir, profile_mode))
                except Exception as exc:  # noqa: BLE001 (one failed K must not end the others)
                    traceback.print_exc()
                    row = ScaleRow(k, scaling.n, notes=[f"FAILED: {exc!r}"[:200]])
                finally:
                    cluster.drop_database(url)
                row.notes.append(f"load {os.getloadavg()[0]:.1f}")
                runs[k].append(row)
                _set_ratios([row], runs[instances[0]][-1])  # this round's K = 1, for the log
                report(row)
                scaling.rows = [_median(r) for r in runs.values() if r]
                _set_ratios(scaling.rows, scaling.rows[0])
    if reference:
        done: list[Row] = []
        for _ in range(repeat):
            print(f"  SQLite reference: one instance, N={scaling.n:,}, {TENANTS} tenants")
            try:
                done.append(end_to_end(scaling.n, TENANTS, None))
                done[-1].notes.append(f"load {os.getloadavg()[0]:.1f}")
                print(f"  SQLite: {done[-1].msg_s or 0:.0f} msg/s; " + "; ".join(done[-1].notes))
            except Exception as exc:  # noqa: BLE001 (the PostgreSQL rows are kept)
                traceback.print_exc()
                scaling.notes.append(f"SQLite reference FAILED: {exc!r}"[:200])
            scaling.reference = _median(done) if done else None
    return scaling


def _set_ratios(rows: list[ScaleRow], base: ScaleRow) -> None:
    for row in rows:
        ok = row.msg_s is not None and base.msg_s
        row.scaling = row.msg_s / base.msg_s if ok else None


def _median(rows: list[Any]) -> Any:
    """A copy of the run with the median msg/s (``ScaleRow`` or ``Row``), noting the others."""
    measured = sorted((r for r in rows if r.msg_s is not None), key=lambda r: r.msg_s)
    chosen = replace(measured[(len(measured) - 1) // 2] if measured else rows[-1])
    chosen.notes = list(chosen.notes)
    if len(rows) > 1:
        runs = ", ".join("-" if r.msg_s is None else f"{r.msg_s:.0f}" for r in rows)
        chosen.notes.insert(0, f"median of {len(rows)} runs by msg/s ({runs})")
    return chosen


def _one(
    k: int,
    n: int,
    db_url: str,
    postgres: ProcessCpu,
    profile: tuple[Path | None, str],
) -> ScaleRow:
    row = ScaleRow(k, n)
    profile_dir, profile_mode = profile
    with ExitStack() as stack:
        times_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-scale-"))
        sink = stack.enter_context(Sink(times_path=str(Path(times_dir) / "accepted.tsv")))
        receiver = stack.enter_context(Receiver())
        ids = [f"t{t:02d}" for t in range(TENANTS)]
        tenants = [Tenant(t, receiver.url) for t in ids]
        accounts = [Account(t, "main", sink.port) for t in ids]
        proxies = [
            stack.enter_context(
                Proxy(tenants, accounts, f"scale-{k}-{i}", db_url=db_url, env=_env(i))
            )
            for i in range(1, k + 1)
        ]  # all started before any is awaited: they race through start-up, as in production
        startup_s = max(p.wait_healthy() for p in proxies)
        ours = (sink.pid, receiver.pid, os.getpid())
        others = [ProcessCpu(pid) for pid in ours if pid is not None]
        profiler = None
        if profile_dir is not None:
            name = f"scale-{n}-{k}i-{profile_mode}.txt"
            profiler = Profiler(proxies[0].pid, profile_dir / name, profile_mode)
            stack.callback(profiler.stop)  # idempotent; also on errors and Ctrl-C
        batches = [
            [message(f"m{i:06d}", ids[i % TENANTS]) for i in range(s, min(s + BATCH, n))]
            for s in range(0, n, BATCH)
        ]
        meter = CpuMeter(proxies, postgres, others)
        started = time.monotonic()
        for j, batch in enumerate(batches):
            proxies[j % k].add_messages(batch)
        ingest_s = time.monotonic() - started
        row.ingest_msg_s = n / ingest_s
        counts: dict[str, Any] = {}

        def all_in() -> bool:
            nonlocal counts
            if sink.count < n:
                return False
            counts = receiver.counts()
            return counts["total_sent"] >= n

        deadline_s = max(120.0, n / 25)
        done = wait_for(all_in, deadline_s, f"{n} messages in the sink and {n} sent reports")
        per_proxy = meter.stop_into(row)
        if done:
            row.elapsed_s = max(sink.last_ts, *counts["last_ts"].values()) - started
            row.msg_s = n / row.elapsed_s
            row.notes.append(f"last add at {ingest_s:.1f}s, all in at {row.elapsed_s:.1f}s")
        else:
            counts = receiver.counts()
            seen = f"sink {sink.count}/{n}, reports {counts['total_sent']}/{n}"
            row.notes.append(f"DEADLINE {deadline_s:.0f}s: {seen}")
        if profiler is not None and (raw := profiler.stop()) is not None:
            print(f"  profile of instance 1 of {k} ({raw}):\n" + summarise(raw))
        if sink.count > n:
            row.notes.append(f"sink got {sink.count} for {n}: {sink.count - n} sent twice")
        row.notes.append("CPU s per proxy " + " / ".join(f"{c:.1f}" for c in per_proxy))
        row.notes.append("sent per instance " + " / ".join(_sent(p) for p in proxies))
        row.notes.append(f"start-up {startup_s:.1f}s")
        row.notes.append(f"other work on the machine {row.foreign_cores:.2f} cores")
    return row


def _env(i: int) -> dict[str, str]:
    return {"GMP_INSTANCE_ID": f"bench-{i}"}


class CpuMeter:
    """CPU seconds of each proxy, PostgreSQL, our helpers and the whole machine from now on."""

    def __init__(self, proxies: list[Proxy], postgres: ProcessCpu, helpers: list[ProcessCpu]):
        self._proxies, self._postgres, self._helpers = proxies, postgres, helpers
        self._started = time.monotonic()
        self._before = self._read()

    def _read(self) -> tuple[list[float], float, float, float]:
        return (
            [p.usage.cpu_s() for p in self._proxies],
            self._postgres.cpu_s(),
            sum(h.cpu_s() for h in self._helpers),
            machine_busy_s(),
        )

    def stop_into(self, row: ScaleRow) -> list[float]:
        """Fill ``row``'s CPU figures; return each proxy's CPU seconds."""
        after, wall_s = self._read(), time.monotonic() - self._started
        before = self._before
        per_proxy = [b - a for a, b in zip(before[0], after[0], strict=True)]
        row.proxy_cpu_s = sum(per_proxy)
        row.postgres_cpu_s = after[1] - before[1]
        row.other_cpu_s = after[2] - before[2]
        ours_s = row.proxy_cpu_s + row.postgres_cpu_s + row.other_cpu_s
        row.foreign_cores = max(0.0, after[3] - before[3] - ours_s) / wall_s
        return per_proxy


def _sent(proxy: Proxy) -> str:
    """This instance's ``gmp_sent_total`` (``/metrics`` is per instance), or ``?``."""
    try:
        text = proxy.session.get(proxy.url + "/metrics", timeout=10).text
    except OSError:
        return "?"
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gmp_sent_total{")
    )
    return f"{total:.0f}"
