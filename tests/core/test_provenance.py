"""One provenance record for the activation cache and the study reports."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy
import torch
import zarr

import repsim
from repsim._core.provenance import provenance

ROOT = Path(__file__).resolve().parents[2]


def test_provenance_records_versions_and_threads():
    import sklearn

    info = provenance()
    assert list(info) == [
        "repsim",
        "torch",
        "numpy",
        "scipy",
        "scikit-learn",
        "zarr",
        "python",
        "threads",
    ]
    assert info["repsim"] == repsim.__version__
    assert info["torch"] == torch.__version__ and info["numpy"] == np.__version__
    assert info["scipy"] == scipy.__version__ and info["scikit-learn"] == sklearn.__version__
    assert info["zarr"] == zarr.__version__
    assert info["python"] == platform.python_version()
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert provenance()["threads"] == "1"
    finally:
        torch.set_num_threads(n)
    assert provenance()["threads"] == str(n)


def test_old_names_are_the_one_function(tmp_path):
    from repsim.capture import record
    from repsim.capture.store import ActivationStore
    from repsim.capture.store import provenance as store_provenance
    from repsim.data import load_dataset
    from repsim.pipeline.study import environment
    from tests.helpers import tiny_resnet

    assert store_provenance is provenance and environment() == provenance()
    store = ActivationStore(tmp_path)
    data = load_dataset("digits").test.subset(slice(0, 20))
    cap = record(tiny_resnet(), data, ["stem"], store=store, progress=False)
    group = zarr.open_group(str(tmp_path / f"{cap.model_fingerprint}-{cap.data_fingerprint}"))
    assert group.attrs["versions"] == provenance()


def test_provenance_does_not_import_scikit_learn():
    code = (
        "import sys; from repsim._core.provenance import provenance; info = provenance(); "
        "assert 'sklearn' not in sys.modules, 'imported'; assert info['scikit-learn']"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
