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
from bench.scenarios import Isolation

HEADERS = (
    "scenario", "N", "tenants", "msg/s", "ratio to bare", "ingest msg/s",
    "add p50 ms", "add p99 ms", "RSS MB", "CPU s", "notes",
)  # fmt: skip


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
