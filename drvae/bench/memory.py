"""Peak memory of a benchmark: this process's resident high-water mark over the block, and
that of the subprocesses it waited for (the sweep's `drvae` jobs).

On Linux the peak is the kernel's own (`VmHWM`, reset at the block's start through
`/proc/self/clear_refs`), so it is exact: a short allocation cannot slip between samples of a
polling thread, however busy the machine. Elsewhere it is the process's lifetime peak.
"""

from __future__ import annotations

import re
import resource
from pathlib import Path
from types import TracebackType

STATUS, CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")
RESET_PEAK = "5"  # clear_refs: reset the peak resident set size (Linux >= 4.0)


def _status_mb(field: str) -> float | None:
    """A `/proc/self/status` memory field (kB) in MB; None where there is no /proc."""
    if not STATUS.is_file():
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.MULTILINE)
    return int(found.group(1)) / 1024 if found else None


def lifetime_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB -> MB (Linux)


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc), or its lifetime peak elsewhere."""
    now = _status_mb("VmRSS")
    return lifetime_peak_mb() if now is None else now


def peak_rss_mb() -> float:
    """The peak resident memory since the last reset (Linux), or the lifetime peak."""
    peak = _status_mb("VmHWM")
    return lifetime_peak_mb() if peak is None else peak


def reset_peak() -> bool:
    """Start a new peak at the current resident memory; False where the kernel cannot."""
    try:
        CLEAR_REFS.write_text(RESET_PEAK)
    except OSError:
        return False
    return True


class PeakMemory:
    """`with PeakMemory() as peak: ...`, then `peak.figures()`: the block's peak resident
    memory in MB (`peak_is_lifetime` when the kernel could not reset it), and the largest
    peak of any child process so far."""

    def __init__(self) -> None:
        self.peak, self.lifetime = 0.0, False

    def __enter__(self) -> PeakMemory:
        self.lifetime = not reset_peak()
        return self

    def __exit__(
        self, kind: type | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.peak = peak_rss_mb()

    def figures(self) -> dict[str, float | bool]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KB -> MB
        out: dict[str, float | bool] = {"peak_rss_mb": round(self.peak, 1)}
        if self.lifetime:
            out["peak_is_lifetime"] = True
        if children:
            out["peak_child_rss_mb"] = round(children, 1)
        return out
