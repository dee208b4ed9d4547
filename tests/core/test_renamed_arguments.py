"""Renamed keyword arguments keep working with a DeprecationWarning at the caller."""

from __future__ import annotations

import inspect
import warnings

import pytest

from repsim._core.deprecation import renamed_arguments


@renamed_arguments({"by": "groups", "alpha": "ci"}, convert={"alpha": lambda a: 1 - a})
def _f(x, *, groups=None, ci=0.95):
    return x, groups, ci


def test_new_names_pass_through_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _f(1, groups="g", ci=0.9) == (1, "g", 0.9)


def test_old_names_warn_at_the_caller_and_are_converted():
    with pytest.warns(DeprecationWarning, match=r"_f\(by=\.\.\.\) is deprecated; use groups=") as w:
        assert _f(1, by="g") == (1, "g", 0.95)
    assert w[0].filename == __file__
    with pytest.warns(DeprecationWarning, match="use ci="):
        assert _f(1, alpha=0.25) == (1, None, 0.75)


def test_both_spellings_and_unknown_names_are_errors():
    with pytest.raises(TypeError, match="both 'by'"):
        _f(1, by="a", groups="b")
    with pytest.raises(TypeError):
        _f(1, colour="red")


def test_signature_shows_only_the_new_names():
    assert list(inspect.signature(_f).parameters) == ["x", "groups", "ci"]
