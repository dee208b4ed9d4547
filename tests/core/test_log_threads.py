"""Messages (repsim._core.log) and the thread limit (repsim._core.threads)."""

from __future__ import annotations

import logging
import os
import warnings

import pytest
import torch

from repsim._core import log
from repsim._core.threads import THREAD_VARIABLES, check_threads, limit_threads
from repsim.errors import ConfigError


def test_cli_logging_levels_format_and_restore(capsys):
    child = log.get_logger("repsim.pipeline.study")
    assert child.name == "repsim.pipeline.study" and log.get_logger("x").name == "repsim.x"
    before = (logging.getLogger("repsim").level, warnings.showwarning, log.is_quiet())
    for verbosity, expect in ((-1, ["E"]), (0, ["I", "W", "E"]), (1, ["D", "I", "W", "E"])):
        with log.cli_logging(verbosity):
            assert log.is_quiet() == (verbosity < 0)
            child.debug("D")
            child.info("I")
            child.warning("W")
            child.error("E")
        err = capsys.readouterr().err.splitlines()
        prefixes = {"D": "[repsim] debug: D", "I": "[repsim] I"}
        prefixes.update({"W": "[repsim] warning: W", "E": "[repsim] error: E"})
        assert err == [prefixes[e] for e in expect], verbosity
    assert (logging.getLogger("repsim").level, warnings.showwarning, log.is_quiet()) == before
    child.error("not configured: no handler of ours")
    assert "[repsim]" not in capsys.readouterr().err


@pytest.mark.parametrize(("verbosity", "shown"), [(0, True), (-1, False)])
def test_python_warnings_go_through_the_handler(verbosity, shown, capsys):
    with log.cli_logging(verbosity), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    err = capsys.readouterr().err
    if shown:
        assert err == "[repsim] warning: UserWarning: careful\n"  # one line, no source line
    else:
        assert "careful" not in err


def test_progress_follows_the_argument_and_quiet():
    assert log.progress_enabled(None) is None
    assert log.progress_enabled(True) is True and log.progress_enabled(False) is False
    assert not log.bar(range(3), progress=True).disable
    assert log.bar(range(3), progress=False).disable
    with log.cli_logging(-1):
        assert log.progress_enabled(True) is False
        assert log.bar(range(3), progress=True).disable
        with log.ticker("quiet", progress=True):
            pass


def test_ticker_shows_elapsed_time_and_cleans_up(capsys):
    import time

    with log.ticker("working", progress=True, interval=0.01):
        time.sleep(0.05)
    assert "working" in capsys.readouterr().err


def test_limit_threads_sets_and_restores_torch_blas_and_environment(monkeypatch):
    from threadpoolctl import threadpool_info

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    torch.set_num_threads(2)
    try:
        with limit_threads(1) as n:
            assert n == 1 and torch.get_num_threads() == 1
            assert all(os.environ[k] == "1" for k in THREAD_VARIABLES)
            assert all(i["num_threads"] == 1 for i in threadpool_info())
            with limit_threads(3):
                assert torch.get_num_threads() == 3
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        assert "OMP_NUM_THREADS" not in os.environ
        with limit_threads(0) as n:
            assert n is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_check_threads_rejects_what_is_not_a_count(bad):
    with pytest.raises(ConfigError, match="'study.threads' must be a whole number"):
        check_threads(bad, "study.threads")
    assert check_threads(0) == 0 and check_threads(4) == 4


def test_deterministic_torch_is_restored_even_on_error():
    import torch

    from repsim._core.threads import deterministic_torch

    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_torch():
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
    assert not torch.are_deterministic_algorithms_enabled()
    with pytest.raises(RuntimeError), deterministic_torch():
        raise RuntimeError("midway")
    assert not torch.are_deterministic_algorithms_enabled()
