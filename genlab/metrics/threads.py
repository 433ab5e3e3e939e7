"""One thread for the small linear algebra of the metrics (torch's intra-op pool and numpy's BLAS).

The feature-space metrics work on matrices of a few hundred to a few thousand rows: a 128 x 128
eigendecomposition, 1,000 x 1,000 kernel matrices. Split over threads they gain nothing, and on a
machine where anything else runs the idle BLAS threads spin against the busy cores: measured on 2
shared cores at load 6-10 (2026-12-02), numpy's OpenBLAS with its default 2 threads took 17-55 ms
for a 128 x 128 ``eigh`` against 4.5-6 ms on one. torch's pool is set by ``torch.set_num_threads``,
numpy's BLAS is not, so both are limited here (numpy's through threadpoolctl, a dependency of
scikit-learn; without it only torch's).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def _blas_limit() -> Any:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings it
        return nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


@contextmanager
def single_thread() -> Iterator[None]:
    """Run tiny networks and small linear algebra on one thread, torch's and the BLAS's that numpy
    uses: they gain nothing from more, and on a shared machine spinning worker threads cost more
    than the work itself. Both are restored afterwards; nesting is fine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _blas_limit():
            yield
    finally:
        torch.set_num_threads(n)


def single_threaded(fn: F) -> F:
    """Decorator: ``fn`` runs inside :func:`single_thread`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with single_thread():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
