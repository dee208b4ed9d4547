import pytest
import torch

from tests.helpers import Tiny, make_data


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    m = Tiny()
    m.eval()
    return m


@pytest.fixture
def toy():
    return make_data(120, 0, "train"), make_data(60, 1, "val")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest (and most reproducibly) on one thread on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
