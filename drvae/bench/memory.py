"""Peak memory of a benchmark: resident memory sampled while it runs, and that of the
subprocesses it waited for (the sweep's `drvae` jobs)."""

from __future__ import annotations

import resource
import threading
from pathlib import Path
from types import TracebackType

PAGE_MB = resource.getpagesize() / 2**20


def rss_mb() -> float:
    """This process's resident memory now (Linux /proc), or its lifetime peak elsewhere."""
    statm = Path("/proc/self/statm")
    if statm.is_file():
        return int(statm.read_text().split()[1]) * PAGE_MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PeakMemory:
    """`with PeakMemory() as peak: ...`, then `peak.figures()`: the block's peak resident
    memory in MB, sampled every 20 ms, and the largest peak of any child process so far."""

    def __init__(self, every_s: float = 0.02) -> None:
        self.every_s, self.peak = every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())

    def figures(self) -> dict[str, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KB -> MB
        out = {"peak_rss_mb": round(self.peak, 1)}
        if children:
            out["peak_child_rss_mb"] = round(children, 1)
        return out
