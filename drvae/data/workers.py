"""Worker processes for image work (decoding, rendering)."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_all_start_methods, get_context

import cv2


def _one_cv2_thread() -> None:
    cv2.setNumThreads(1)  # the processes are the parallelism; threads would only contend


def image_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of `workers` processes for cv2/PIL work.

    Not forked from the caller: a child forked while the caller's cv2 (or torch) thread pool
    holds a lock deadlocks on it (seen: `cv2.setNumThreads` hung in every child). Started by
    a fork server where the platform has one: the server imports the caller's modules once,
    then forks clean children quickly; plain spawn would re-import torch in every child.
    """
    method = "forkserver" if "forkserver" in get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(workers, mp_context=get_context(method), initializer=_one_cv2_thread)


def chunk_size(n_tasks: int, workers: int, most: int = 32) -> int:
    """Large enough to amortise inter-process traffic, small enough that every worker gets
    several chunks (one chunk per worker would leave the others idle at the end)."""
    return max(1, min(most, n_tasks // (4 * workers)))
