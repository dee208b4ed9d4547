"""Messages and progress: the ``repsim`` logger, the command line's verbosity, progress bars.

repsim reports what it does through :mod:`logging` on the ``"repsim"`` logger (and children such
as ``"repsim.pipeline.study"``). As a library it installs no handler: from Python, messages
appear once you configure logging, e.g. ``logging.basicConfig(level=logging.INFO)``. The
``repsim`` command configures it with :func:`cli_logging`:

========== ============== ======================= ==========================================
flag       level          progress bars           what a user sees on stderr
========== ============== ======================= ==========================================
``-q``     ERROR          never                   errors only
(none)     INFO           on a terminal           one line per finished stage, warnings
``-v``     DEBUG          on a terminal           also the details (cache hits, threads)
========== ============== ======================= ==========================================

Every stage line is written whether or not stderr is a terminal, so ``repsim run STUDY 2>log``
keeps a record of the stages and their times. Progress bars (:func:`bar`) follow the ``progress``
argument of the function that draws them; ``None`` means "on a terminal, unless the command
line said ``-q``" (:func:`progress_enabled`).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = [
    "LOGGER_NAME",
    "bar",
    "cli_logging",
    "get_logger",
    "is_quiet",
    "progress_enabled",
    "ticker",
]

#: Name of the logger every repsim module logs to (``getLogger(__name__)`` is a child of it).
LOGGER_NAME = "repsim"

_state = {"quiet": False}


def get_logger(name: str | None = None) -> logging.Logger:
    """The ``repsim`` logger, or its child ``name`` (a module's ``__name__``)."""
    if not name or name == LOGGER_NAME:
        return logging.getLogger(LOGGER_NAME)
    if not name.startswith(LOGGER_NAME + "."):
        name = f"{LOGGER_NAME}.{name}"
    return logging.getLogger(name)


logging.getLogger(LOGGER_NAME).addHandler(logging.NullHandler())


def is_quiet() -> bool:
    """Whether the command line asked for quiet (``-q``): no progress bars, errors only."""
    return _state["quiet"]


def progress_enabled(progress: bool | None) -> bool | None:
    """Resolve a ``progress`` argument into tqdm's ``disable`` logic.

    Returns
    -------
    bool or None
        ``False`` when ``progress`` is ``False`` or the command line is quiet; ``True`` when
        ``progress`` is ``True``; ``None`` (tqdm decides: on a terminal only) otherwise.
    """
    if progress is False or _state["quiet"]:
        return False
    return True if progress else None


def bar(
    iterable: Iterable[Any] | None = None, *, progress: bool | None = None, **kwargs: Any
) -> Any:
    """A tqdm progress bar that honours ``progress`` and the command line's ``-q``.

    Parameters
    ----------
    iterable : iterable, optional
        What to iterate over (omit it and call ``update`` for a manual bar).
    progress : bool, optional
        ``True``: always draw; ``False``: never; ``None``: only on a terminal, and not under
        ``-q``.
    **kwargs
        Passed to :class:`tqdm.auto.tqdm` (``desc``, ``total``, ``unit``, ...).
    """
    from tqdm.auto import tqdm

    enabled = progress_enabled(progress)
    disable = None if enabled is None else not enabled
    return tqdm(iterable, disable=disable, leave=False, dynamic_ncols=True, **kwargs)


@contextlib.contextmanager
def ticker(desc: str, *, progress: bool | None = None, interval: float = 0.5) -> Iterator[None]:
    """Show ``desc`` with the elapsed time while the block runs (for steps without a count).

    A tqdm bar without a total, redrawn every ``interval`` seconds from a background thread,
    so a long step that has nothing to count (writing figures) still shows it is alive. It
    follows ``progress`` as :func:`bar` does and is removed when the block ends.
    """
    b = bar(progress=progress, desc=desc, bar_format="{desc} {elapsed}")
    if b.disable:
        b.close()
        yield
        return
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(interval):
            b.refresh()

    thread = threading.Thread(target=refresh, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        b.close()


class _StderrHandler(logging.StreamHandler):
    """A stream handler that writes to whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # the base class assigns it; always use sys.stderr
        pass

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record; above live progress bars, through ``tqdm.write``."""
        tqdm_module = sys.modules.get("tqdm")
        live = getattr(getattr(tqdm_module, "tqdm", None), "_instances", None)
        if live:
            try:
                tqdm_module.tqdm.write(self.format(record), file=sys.stderr)
            except Exception:  # noqa: BLE001 - a message must never break a run
                self.handleError(record)
            return
        super().emit(record)


class _Formatter(logging.Formatter):
    """``[repsim] message``; warnings and errors say so."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"[repsim] error: {message}"
        if record.levelno >= logging.WARNING:
            return f"[repsim] warning: {message}"
        if record.levelno <= logging.DEBUG:
            return f"[repsim] debug: {message}"
        return f"[repsim] {message}"


def _level(verbosity: int) -> int:
    if verbosity < 0:
        return logging.ERROR
    return logging.INFO if verbosity == 0 else logging.DEBUG


@contextlib.contextmanager
def cli_logging(verbosity: int = 0) -> Iterator[logging.Logger]:
    """Configure messages for one command-line run; everything is restored afterwards.

    Parameters
    ----------
    verbosity : int
        ``-1`` (``-q``): errors only and no progress bars; ``0``: one line per stage and
        warnings; ``1`` or more (``-v``): also debug details.

    Python warnings raised during the run go through the same handler as one line each
    (``[repsim] warning: RelationWarning: ...``), so ``-q`` silences them too.
    """
    logger = logging.getLogger(LOGGER_NAME)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    saved = (logger.level, logger.propagate, _state["quiet"], warnings.showwarning)
    logger.addHandler(handler)
    logger.setLevel(_level(verbosity))
    logger.propagate = False
    _state["quiet"] = verbosity < 0
    warn_logger = logging.getLogger(f"{LOGGER_NAME}.warnings")

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        warn_logger.warning("%s: %s", category.__name__, message)

    warnings.showwarning = showwarning
    try:
        yield logger
    finally:
        warnings.showwarning = saved[3]
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
        _state["quiet"] = saved[2]
