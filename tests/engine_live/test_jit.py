"""`engine_live.plan.jit.compile_kernel`: a kernel still compiles where numba finds no writable cache
location (a read-only install): it is then compiled in memory. `engine_live.plan.warmup`."""

from __future__ import annotations

from typing import Any

import numba
import pytest

from engine_live.plan.jit import compile_kernel


def add_one(x: float) -> float:
    return x + 1.0


def test_a_kernel_compiles_without_a_cache_location(monkeypatch: pytest.MonkeyPatch) -> None:
    real = numba.njit
    asked: list[bool] = []

    def njit(*args: Any, **options: Any) -> Any:
        if args or "cache" not in options:  # numba's own uses
            return real(*args, **options)
        asked.append(options["cache"])
        if options["cache"]:
            raise RuntimeError("cannot cache function 'add_one': no locator available for file")
        return real(**options)

    monkeypatch.setattr(numba, "njit", njit)
    kernel = compile_kernel(add_one)
    assert kernel(1.5) == 2.5 and asked == [True, False]


def test_the_warm_up_compiles_the_kernels_and_switches_queues_to_the_compiled_recurrence() -> None:
    from engine_live.plan import queue_kernel
    from engine_live.plan.warmup import warm_up

    warm_up()
    assert queue_kernel.compiled_steps(1) is not None  # any size from now on
