"""Compiling kernels with numba, imported on first use (`compile_kernel`).

Kernels are compiled without fastmath (no reordering of floating point), so a compiled kernel gives
the bits of the same operations in Python/numpy order. The compiled code is cached on disk (beside
the module in `__pycache__`, else numba's user cache or `NUMBA_CACHE_DIR`); where no cache location
is writable (a read-only install without a home directory) the kernel is compiled in memory instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, cast

F = TypeVar("F", bound=Callable[..., object])


def compile_kernel(fn: F) -> F:
    """`fn` compiled by numba (cached on disk when a location is writable)."""
    from numba import njit

    try:
        return cast(F, njit(cache=True, nogil=True)(fn))
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return cast(F, njit(cache=False, nogil=True)(fn))
