"""Sampling the proxy with py-spy during a run, and a text summary of where its time went.

``py-spy record --format raw`` writes collapsed stacks ("frame;frame;frame count"),
one line per distinct stack and thread; which threads are sampled depends on the
mode (see ``MODES``). ``summarise`` reports the functions with the most samples on
top of the stack (self), anywhere in it (inclusive) and in our own code, as a share
of all samples.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path

STOP_TIMEOUT_S = 20.0
# active: threads doing something (running, or blocked in a call py-spy does not see as idle);
# gil: only the thread holding the GIL, i.e. where the Python CPU goes;
# wall: every thread all the time, idle waits included (one thread's wall-clock breakdown).
MODES = {"active": [], "gil": ["--gil"], "wall": ["--idle"]}
RATE_HZ = 200
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
PROJECT_DIRS = ("proxy/", "actors/")
_FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+)(?::\d+)?\)$")


class Profiler:
    """``py-spy record`` attached to one pid until ``stop()``; a no-op when py-spy is missing."""

    def __init__(self, pid: int, out: Path, mode: str = "active") -> None:
        self.out = out
        self._process: subprocess.Popen[bytes] | None = None
        exe = shutil.which("py-spy")
        if exe is None:
            print("  ! py-spy not found (pip install py-spy); no profile taken")
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        command = [exe, "record", "--pid", str(pid), "--format", "raw", "-o", str(out)]
        command += ["--rate", str(RATE_HZ), "--nonblocking", "--threads"]
        command += MODES[mode]
        self._process = subprocess.Popen(  # noqa: S603 (py-spy found on PATH, fixed arguments)
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def stop(self) -> Path | None:
        """Stop sampling (SIGINT makes py-spy write its file); return the file if written."""
        if self._process is None:
            return None
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(STOP_TIMEOUT_S)
        self._process = None
        return self.out if self.out.exists() else None


def _frame_name(frame: str) -> tuple[str, bool]:
    """``send (proxy/smtp/client.py:120)`` -> (``client.py:send``, False) or, for our own
    code (``proxy/``, ``actors/``), (``proxy/smtp/client.py:send``, True)."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), False
    path = match["file"]
    if path.startswith(PROJECT_DIRS):
        return f"{path}:{match['func']}", True
    return f"{Path(path).name}:{match['func']}", False


def summarise(raw: Path, top: int = 15) -> str:
    """Shares of samples: per thread kind, per function (self, inclusive) and in our code."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    project: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    incarnations: dict[str, set[str]] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        count = int(match["count"])
        frames = match["stack"].split(";")
        total += count
        if frames and frames[0].startswith(("thread", "process")):
            name = _thread_name(frames[0])
            kind = re.sub(r"\d+", "N", name)
            threads[kind] += count
            incarnations.setdefault(kind, set()).add(name)
            frames = frames[1:]
        names = [_frame_name(frame) for frame in frames]
        if names:
            own[names[-1][0]] += count
        for name, ours in set(names):
            inclusive[name] += count
            if ours:
                project[name] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples ({total / RATE_HZ:.1f} thread-seconds active)", "-- threads:"]
    lines += [
        f"  {100 * n / total:5.1f}%  {kind} ({len(incarnations[kind])} thread name(s))"
        for kind, n in threads.most_common(top)
    ]
    for title, counter in (("self", own), ("inclusive", inclusive), ("our code", project)):
        lines.append(f"-- {title}:")
        lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in counter.most_common(top)]
    return "\n".join(lines)


def _thread_name(frame: str) -> str:
    """Thread frames look like ``thread (1234): Name``; keep the name."""
    return (frame.partition("): ")[2] or frame).split(" (")[0]
