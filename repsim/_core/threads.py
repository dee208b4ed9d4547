"""CPU threads: one limit for torch and the numpy/scipy BLAS, set for a block and then restored.

Small models on shared machines run fastest on one thread: torch's and OpenBLAS's default of
one thread per core makes every process spin against every other (the quickstart took 17.5 min
with two threads on a busy 2-core machine and 88 s with one). repsim therefore runs studies
and commands with :data:`DEFAULT_THREADS` threads unless told otherwise (``--threads N`` on
the command line, ``[study] threads`` in a study config); ``0`` leaves the libraries' own
defaults (all cores), the right choice for large models on an idle machine.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from repsim.errors import ConfigError

__all__ = [
    "DEFAULT_THREADS",
    "THREAD_VARIABLES",
    "check_threads",
    "deterministic_torch",
    "limit_threads",
]

#: Threads a study or command uses when nothing says otherwise.
DEFAULT_THREADS = 1

#: Environment variables read by thread pools that load later (OpenMP, OpenBLAS, MKL, ...).
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def check_threads(value: object, key: str = "threads") -> int:
    """Check a thread count: an integer >= 0 (``0``: the libraries' defaults).

    Raises
    ------
    ConfigError
        Naming ``key`` when ``value`` is not a non-negative integer.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"'{key}' must be a whole number of threads >= 0 (0: all cores), got {value!r}."
        )
    return value


@contextlib.contextmanager
def limit_threads(n: int | None) -> Iterator[int | None]:
    """Run the block with at most ``n`` threads in torch and in the BLAS/OpenMP pools.

    Libraries already loaded are limited directly (:func:`torch.set_num_threads`;
    :mod:`threadpoolctl` for numpy's and scipy's BLAS and OpenMP) and restored when the block
    ends; libraries loaded inside the block read the limit from :data:`THREAD_VARIABLES`,
    which are restored too. Nothing is imported here, so a command that never loads torch
    does not pay for it.

    Parameters
    ----------
    n : int or None
        Threads; ``0`` or ``None`` changes nothing.

    Yields
    ------
    int or None
        ``n`` (``None`` when nothing was limited).
    """
    if not n:
        yield None
        return
    n = check_threads(n)
    saved_env = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    try:
        with contextlib.ExitStack() as stack:
            os.environ.update({k: str(n) for k in THREAD_VARIABLES})
            if torch is not None:
                torch.set_num_threads(n)
            if "numpy" in sys.modules:
                from threadpoolctl import threadpool_limits

                stack.enter_context(threadpool_limits(limits=n))
            yield n
    finally:
        # after threadpoolctl has restored OpenMP, which torch's own count reads
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if torch is not None and torch_before is not None:
            torch.set_num_threads(torch_before)


@contextlib.contextmanager
def deterministic_torch() -> Iterator[None]:
    """Run the block with torch's deterministic algorithms where torch offers them.

    :func:`torch.use_deterministic_algorithms` with ``warn_only=True`` (an operation without a
    deterministic implementation warns instead of failing); the previous setting is restored
    when the block ends, also on an exception. On CPU every operation repsim uses is
    deterministic already for a fixed thread count; this matters on CUDA.
    """
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)
