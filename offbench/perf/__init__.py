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


def time_one_period(loop, problem, arrays, seeds: int, repeats: int):
    """Compile and time one evaluation period of `loop` (offbench.loops.offline or
    offbench.loops.o2o: their init_carry/make_chunk) with `seeds` vmapped; returns (compile s,
    median run s, carry, keys)."""
    import jax.numpy as jnp

    keys = jnp.stack([jax.random.PRNGKey(s) for s in range(seeds)])
    carry = jax.jit(jax.vmap(lambda k: loop.init_carry(problem, k, 0, arrays)))(keys)
    first = jnp.asarray(0, jnp.int32)
    chunk = jax.jit(jax.vmap(loop.make_chunk(problem, 1), in_axes=(0, None, None)))
    start = time.perf_counter()
    compiled = chunk.lower(carry, first, arrays).compile()
    compile_s = time.perf_counter() - start
    return compile_s, timed(lambda: compiled(carry, first, arrays), repeats), carry, keys
