"""Delivery-engine benchmark: one run on loopback, a table on stdout, then the same as Markdown.

Run from the repository root (see bench/README.md)::

    python -m bench.run --repeat 3      # everything, median of 3 (about 12 minutes)
    python -m bench.run --quick         # N = 1,000 only, no idle-1,000-tenants case
    python -m bench.run --scenarios bare,e2e --sizes 10000 --tenants 1 --profile /tmp/prof
    python -m bench.run --scenarios scale --live   # 1, 2, 3 instances on one PostgreSQL

Every server (SMTP sink, tenant receiver, the proxy) runs in its own process and
is stopped at the end, on errors and on Ctrl-C too. Every wait has a deadline;
a missed one is printed and the run goes on with the next scenario.
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import proxyproc, scale, scenarios
from bench.measure import Row
from bench.profile import MODES
from bench.report import (
    isolation_text,
    load,
    machine,
    markdown_table,
    num,
    revision,
    scale_table,
    targets,
    text_table,
)
from bench.scale import Scaling
from bench.scenarios import Isolation

ALL = ("bare", "e2e", "api", "idle", "isolation", "scale")
SIZES = "1000,10000"
SCALE_SIZE = 5000


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N=1,000 only; skip the idle case")
    parser.add_argument(
        "--scenarios", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}"
    )
    parser.add_argument(
        "--sizes", help=f"message counts N (default {SIZES}; for scale {SCALE_SIZE})"
    )
    parser.add_argument("--tenants", default="1,10", help="tenant counts for end-to-end runs")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of each bare, e2e and scale case; median kept"
    )
    parser.add_argument("--isolation-reps", type=int, default=5, help="runs of each side")
    parser.add_argument("--idle-tenants", type=int, default=1000, help="tenants (2 accounts each)")
    parser.add_argument(
        "--instances", default="1,2,3", help="instance counts K for scale (first is the base)"
    )
    parser.add_argument(
        "--live", action="store_true", help="run the working tree, not a snapshot taken at start"
    )
    parser.add_argument(
        "--code",
        type=Path,
        help="keep the code snapshot in this dir, or reuse it if it is there (compare runs)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy each e2e and api run into this dir")
    parser.add_argument(
        "--profile-mode",
        choices=sorted(MODES),
        default="active",
        help="active threads, the GIL holder only (CPU), or all threads (wall clock)",
    )
    args = parser.parse_args(argv)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(ALL)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    sizes = [int(s) for s in (args.sizes or SIZES).split(",")]
    args.scale_sizes = [1000] if args.quick else sizes if args.sizes else [SCALE_SIZE]
    args.sizes = [1000] if args.quick else sizes
    args.instances = tuple(int(k) for k in args.instances.split(","))
    args.tenants = [int(t) for t in args.tenants.split(",")]
    if args.quick and "idle" in args.scenarios:
        args.scenarios.remove("idle")
    return args


def _attempt(
    what: str, run: Callable[[], Row], rows: list[Row], fallback: Row, repeat: int = 1
) -> Row:
    """Run a scenario ``repeat`` times and keep the run with the median msg/s."""
    done: list[Row] = []
    for attempt in range(repeat):
        print(f"\n== {what}" + (f" (run {attempt + 1} of {repeat})" if repeat > 1 else ""))
        try:
            row = run()
        except Exception as exc:  # noqa: BLE001 (one failed scenario must not end the run)
            traceback.print_exc()
            row = copy.deepcopy(fallback)
            row.notes.append(f"FAILED: {type(exc).__name__}: {exc}"[:200])
        row.notes.append(f"load {os.getloadavg()[0]:.1f}")
        print(text_table([row]), flush=True)
        done.append(row)
    measured = sorted((r for r in done if r.msg_s is not None), key=lambda r: r.msg_s or 0)
    chosen = measured[(len(measured) - 1) // 2] if measured else done[-1]
    if repeat > 1:
        runs = ", ".join(num(r.msg_s) for r in done)
        chosen.notes.insert(0, f"median of {repeat} runs by msg/s ({runs})")
    rows.append(chosen)
    return chosen


def _take_snapshot(snapshot: Path) -> str:
    """Copy the code (or reuse the copy in ``--code``) and point every proxy at it."""
    stamp = snapshot / proxyproc.REVISION_FILE
    if (snapshot / "proxy").is_dir() and stamp.exists():
        described = (
            f"{stamp.read_text().strip()}, snapshot {proxyproc.code_digest(snapshot)} reused"
        )
    else:
        digest = proxyproc.snapshot_code(snapshot)
        stamp.write_text(revision())
        described = f"{revision()}, snapshot {digest}"
    proxyproc.use_code(snapshot)
    return f"{described} (proxy/, actors/ in {snapshot})"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run_all(args: argparse.Namespace, rows: list[Row], scaled: list[Scaling]) -> Isolation | None:
    """Every chosen scenario in order; rows (and scaling rows) are appended as measured."""
    bare: dict[int, float | None] = {}
    if {"bare", "e2e"} & set(args.scenarios):
        for n in args.sizes:
            row = _attempt(
                f"bare limit, N={n:,}",
                lambda n=n: scenarios.bare(n),
                rows,
                Row("bare", n, 1),
                args.repeat,
            )
            bare[n] = row.msg_s
    if "e2e" in args.scenarios:
        for n in args.sizes:
            for t in args.tenants:
                _attempt(
                    f"end to end, N={n:,}, {t} tenant(s)",
                    lambda n=n, t=t: scenarios.end_to_end(
                        n, t, bare.get(n), args.profile, profile_mode=args.profile_mode
                    ),
                    rows,
                    Row("end-to-end", n, t),
                    args.repeat,
                )
    if "api" in args.scenarios:
        for n in args.sizes:
            _attempt(
                f"API only (no sending), N={n:,}",
                lambda n=n: scenarios.api_only(n, args.profile, profile_mode=args.profile_mode),
                rows,
                Row("api-only", n, 1),
            )
    if "idle" in args.scenarios:
        n_idle = args.idle_tenants
        _attempt(
            f"idle, {n_idle:,} tenants",
            lambda: scenarios.idle(n_idle),
            rows,
            Row("idle", 0, n_idle),
        )
    if "scale" in args.scenarios:
        for n in args.scale_sizes:
            _scale(args, n, scaled)
    if "isolation" in args.scenarios:
        print("\n== isolation: B's 100 messages alone vs behind A's 2,000 at 100 ms/DATA")
        return scenarios.isolation(reps=args.isolation_reps)
    return None


def _scale(args: argparse.Namespace, n: int, scaled: list[Scaling]) -> None:
    """K instances on one PostgreSQL database; a failure is noted and the run goes on."""
    ks = ", ".join(map(str, args.instances))
    print(f"\n== {ks} instance(s) on one PostgreSQL, N={n:,}, {scale.TENANTS} tenants")
    scaling = Scaling(n)
    scaled.append(scaling)

    def report(row: scale.ScaleRow) -> None:
        print(scale_table(Scaling(n, rows=[row])), flush=True)

    try:
        scale.run(
            scaling,
            args.instances,
            repeat=args.repeat,
            profile_dir=args.profile,
            profile_mode=args.profile_mode,
            report=report,
        )
    except Exception as exc:  # noqa: BLE001 (one failed scenario must not end the run)
        traceback.print_exc()
        scaling.notes.append(f"FAILED: {type(exc).__name__}: {exc}"[:200])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Also when started in the background (SIGINT ignored) or stopped with SIGTERM:
    # unwind through every ``with``, so each process we started is stopped.
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    rows: list[Row] = []
    iso: Isolation | None = None
    scaled: list[Scaling] = []
    header, code = machine(), "not chosen yet"
    print(f"machine: {header}; {load()}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-code-") as temporary:
            if args.live:
                code = f"working tree at {revision()} (--live)"
            else:
                code = _take_snapshot(args.code or Path(temporary))
            print(f"code: {code}", flush=True)
            iso = _run_all(args, rows, scaled)
    except KeyboardInterrupt:
        print("\ninterrupted: every process was stopped; figures so far follow", file=sys.stderr)
    if rows or not scaled:
        print("\n" + text_table(rows))
    for scaling in scaled:
        print("\n" + scale_table(scaling))
    print("\n---- Markdown ----\n")
    print(f"Machine: {header}; {code}; at the end: {load()}\n")
    if rows or not scaled:
        print(markdown_table(rows))
    if iso is not None:
        print("\nIsolation (tenant B's 100 messages delivered and reported):\n")
        print(isolation_text(iso))
    for scaling in scaled:
        print(
            f"\nSeveral instances on one PostgreSQL (N={scaling.n:,}, {scaling.tenants} tenants):\n"
        )
        print(scale_table(scaling, markdown=True))
    print("\nTargets:\n")
    print("\n".join(targets(rows, iso)) or "- (nothing measured)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
