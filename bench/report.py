"""The benchmark's report: the machine line, the result tables and the verdict on each target.

Pure formatting of ``Row``s and the isolation result; nothing here measures.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import subprocess
from pathlib import Path

from bench.measure import Row
from bench.scale import Scaling
from bench.scenarios import Isolation

HEADERS = (
    "scenario", "N", "tenants", "msg/s", "ratio to bare", "ingest msg/s",
    "add p50 ms", "add p99 ms", "RSS MB", "CPU s", "notes",
)  # fmt: skip
SCALE_HEADERS = (
    "instances", "N", "tenants", "msg/s", "x 1 instance", "ingest msg/s", "proxy CPU s",
    "PostgreSQL CPU s", "sink+receiver+client CPU s", "cores busy", "CPU ms/msg", "notes",
)  # fmt: skip
REFERENCE_NOTES = ("median", "report latency", "load", "DEADLINE", "FAILED")


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor() or model
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{today}; {os.cpu_count()} cores ({model}); Python {platform.python_version()}; "
        f"{platform.system()} {platform.release()}"
    )


def revision() -> str:
    """The commit measured, marked when the working tree differs from it."""
    root = Path(__file__).resolve().parents[1]
    git = ["git", "-C", str(root)]
    try:
        head = subprocess.run(  # noqa: S603 (fixed git command)
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(  # noqa: S603
            [*git, "status", "--porcelain", "--", "proxy", "actors"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}{' + uncommitted changes' if dirty else ''}"


def load() -> str:
    """Load average: other work on the machine shares the cores with the benchmark."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def cells(row: Row) -> list[str]:
    rss = num(row.peak_rss_mb, 1)
    if row.idle_rss_mb is not None:
        rss = f"{row.idle_rss_mb:.1f} idle ({rss} peak)"
    return [
        row.scenario, f"{row.n:,}", str(row.tenants), num(row.msg_s), num(row.ratio, 2),
        num(row.ingest_msg_s), num(row.add_p50_ms, 2), num(row.add_p99_ms, 2), rss,
        num(row.cpu_s, 1), "; ".join(row.notes),
    ]  # fmt: skip


def text_table(rows: list[Row]) -> str:
    table = [list(HEADERS), *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADERS) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1]
        for line in table
    )


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def targets(rows: list[Row], iso: Isolation | None) -> list[str]:
    """One line per target: met / MISSED with the figures it was judged on."""
    e2e = [r for r in rows if r.scenario == "end-to-end" and r.msg_s is not None]
    out: list[str] = []

    def judge(name: str, ok: bool, detail: str) -> None:
        out.append(f"- {name}: **{'met' if ok else 'MISSED'}** ({detail})")

    api = [r for r in rows if r.scenario == "api-only" and r.ingest_msg_s is not None]
    api_ingest = "".join(f"; API-only N={r.n:,}: {r.ingest_msg_s:,.0f}" for r in api)
    api_p99 = "".join(f"; API-only N={r.n:,}: {r.add_p99_ms:.2f} ms" for r in api)
    if e2e:
        low = min(r.ingest_msg_s or 0 for r in e2e)
        judge("ingest ≥ 5,000 msg/s", low >= 5000, f"lowest end to end {low:,.0f}{api_ingest}")
        singles = [r for r in e2e if r.tenants == 1 and r.ratio is not None]
        if singles:
            worst = min(r.ratio or 0 for r in singles)
            judge("end to end ≥ 0.8 x bare, one account", worst >= 0.8, f"lowest {worst:.2f}")
        for tenants in sorted({r.tenants for r in e2e}):
            by_n = {r.n: r.msg_s or 0 for r in e2e if r.tenants == tenants}
            if len(by_n) > 1:
                small, large = by_n[min(by_n)], by_n[max(by_n)]
                judge(
                    f"no drop from {min(by_n):,} to {max(by_n):,} messages, {tenants} tenant(s)",
                    large >= 0.9 * small,
                    f"{small:,.0f} → {large:,.0f} msg/s, x{large / small:.2f}; tolerance 10 %",
                )
        worst_p99 = max(r.add_p99_ms or 0 for r in e2e)
        judge("add p99 ≤ 5 ms", worst_p99 <= 5, f"highest end to end {worst_p99:.2f} ms{api_p99}")
    for row in rows:
        if row.scenario == "idle" and row.idle_rss_mb is not None:
            judge(
                f"{row.tenants:,} tenants idle ≤ 150 MB RSS",
                row.idle_rss_mb <= 150,
                f"{row.idle_rss_mb:.1f} MB",
            )
    if iso is not None and iso.ratio is not None:
        judge("isolation: B loaded / alone ≤ 1.2", iso.ratio <= 1.2, f"x{iso.ratio:.2f}")
    return out


def isolation_text(iso: Isolation) -> str:
    def fmt(values: list[float]) -> str:
        if not values:
            return "-"
        runs = ", ".join(f"{v:.3f}" for v in values)
        return f"median {statistics.median(values):.3f} s ({runs})"

    ratio = "-" if iso.ratio is None else f"{iso.ratio:.2f}"
    lines = [
        f"- B alone: {fmt(iso.alone_s)}",
        f"- B loaded: {fmt(iso.loaded_s)}",
        f"- ratio loaded / alone: {ratio} (target ≤ 1.2)",
    ]
    lines += [f"- {note}" for note in iso.notes]
    return "\n".join(lines)


def scale_table(scaling: Scaling, *, markdown: bool = False) -> str:
    """K instances on PostgreSQL, then the SQLite single-instance reference (ratio to K=1)."""
    lines = []
    for row in scaling.rows:
        work = (row.proxy_cpu_s or 0) + (row.postgres_cpu_s or 0)
        lines.append([
            str(row.instances), f"{row.n:,}", str(scaling.tenants), num(row.msg_s),
            num(row.scaling, 2), num(row.ingest_msg_s), num(row.proxy_cpu_s, 1),
            num(row.postgres_cpu_s, 1), num(row.other_cpu_s, 1), num(row.cores_busy, 2),
            num(1000 * work / row.n if row.proxy_cpu_s is not None else None, 1),
            "; ".join(row.notes),
        ])  # fmt: skip
    ref = scaling.reference
    if ref is not None:
        first = scaling.rows[0].msg_s if scaling.rows else None
        ratio = ref.msg_s / first if ref.msg_s is not None and first else None
        notes = [n for n in ref.notes if n.startswith(REFERENCE_NOTES)]
        lines.append([
            "1 (SQLite)", f"{ref.n:,}", str(ref.tenants), num(ref.msg_s), num(ratio, 2),
            num(ref.ingest_msg_s), num(ref.cpu_s, 1), "-", "-", "-",
            num(1000 * ref.cpu_s / ref.n if ref.cpu_s is not None else None, 1),
            "; ".join(notes),
        ])  # fmt: skip
    if markdown:
        out = ["| " + " | ".join(SCALE_HEADERS) + " |", "|" + "---|" * len(SCALE_HEADERS)]
        out += ["| " + " | ".join(line) + " |" for line in lines]
    else:
        table = [list(SCALE_HEADERS), *lines]
        widths = [max(len(line[i]) for line in table) for i in range(len(SCALE_HEADERS) - 1)]
        out = [
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=False)) + "  " + line[-1]
            for line in table
        ]
    out += [f"- {note}" for note in scaling.notes]
    return "\n".join(out)
