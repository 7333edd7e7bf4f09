"""Benchmarks run by `make perf` (results/perf)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import jax


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `fn` (blocked until its results are ready), after one warm-up."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_cold_compiles() -> None:
    """Turn JAX's persistent compilation cache off for this process, so compile times are real
    compilations, not cache loads (the cache is on for everything else)."""
    jax.config.update("jax_enable_compilation_cache", False)
