"""Old import paths and renamed names of repsim 0.1 keep working, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from repsim._core.deprecation import MOVED_MODULES, MOVED_NAMES

# one public name per old module, checked to be the very object at the new home
OLD_NAMES = {
    "repsim.cache": ("ActivationStore", "repsim.capture.store"),
    "repsim.fingerprints": ("model_fingerprint", "repsim._core.fingerprints"),
    "repsim.shards": ("record_shard", "repsim.capture.shards"),
    "repsim.config": ("load_config", "repsim.pipeline.config"),
    "repsim.family": ("build", "repsim.pipeline.family"),
    "repsim.study": ("run_study", "repsim.pipeline.study"),
    "repsim.outofcore": ("stream_group_metrics", "repsim.fairness.counts"),
    "repsim.distributed": ("compare_distributed", "repsim.scale.dask"),
    "repsim.plots": ("exemplar_grid", "repsim.report.exemplar_grid"),
    "repsim.cli_cache": ("add_parser", "repsim.cli.cache"),
    "repsim.cli_compare": ("compare_report", "repsim.pipeline.compare_report"),
    "repsim.cli_compress": ("run_prune", "repsim.cli.compress"),
    "repsim.cli_scale": ("add_scheduler_options", "repsim.cli.compare"),
    "repsim.cli_subnetwork": ("run_search", "repsim.pipeline.run_search"),
    "repsim.saliency.fairgrape": ("fairgrape_prune", "repsim.compress.fairgrape"),
    "repsim.saliency.cli": ("run_saliency", "repsim.cli.saliency"),
    "repsim.similarity.cli": ("run_similarity", "repsim.cli.similarity"),
}


def test_every_moved_module_is_covered():
    assert set(OLD_NAMES) == set(MOVED_MODULES)


@pytest.mark.parametrize("old", sorted(OLD_NAMES))
def test_old_module_path_imports_with_warning(old):
    name, new = OLD_NAMES[old]
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=old.replace(".", r"\.")):
        module = importlib.import_module(old)
    assert getattr(module, name) is getattr(importlib.import_module(new), name)
    with pytest.raises(AttributeError):
        module.no_such_name  # noqa: B018


def test_from_import_of_old_path_warns_at_the_caller(tmp_path):
    code = (
        "import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
        "try:\n    from repsim.cache import ActivationStore\n"
        "except DeprecationWarning as w:\n    print('warned', w)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "warned repsim.cache is deprecated" in out.stdout


@pytest.mark.parametrize(
    ("package", "name"), [(p, n) for p, names in MOVED_NAMES.items() for n in names]
)
def test_moved_package_attribute(package, name):
    with pytest.warns(DeprecationWarning, match=name):
        value = getattr(importlib.import_module(package), name)
    assert value is getattr(importlib.import_module(MOVED_NAMES[package][name]), name)


def test_unknown_package_attribute_is_an_attribute_error():
    import repsim.saliency

    with pytest.raises(AttributeError):
        repsim.saliency.no_such_name  # noqa: B018


def test_root_api_is_lazy_and_complete():
    import repsim

    for name in repsim.__all__:
        assert getattr(repsim, name) is not None, name
    with pytest.raises(AttributeError):
        repsim.no_such_name  # noqa: B018


def test_cli_import_is_light():
    code = (
        "import repsim.cli, sys\n"
        "heavy = [m for m in ('matplotlib', 'zarr', 'dask', 'repsim.pipeline', 'torch')"
        " if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
