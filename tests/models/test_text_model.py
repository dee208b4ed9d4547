"""The tiny BERT builder: built from keyword arguments, saved by import path, rebuilt offline."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from repsim.layers import head_count  # noqa: E402
from repsim.models import from_builder, load_model, save_model  # noqa: E402


def test_tiny_bert_round_trips_by_builder(tmp_path):
    model = from_builder("repsim.models.text:tiny_bert", seed=3, n_classes=3, hidden=32, heads=2)
    assert model.config.num_labels == 3 and model.config.hidden_size == 32
    assert head_count(model, "bert.encoder.layer.1.attention.self") == 2
    save_model(model, tmp_path / "m")
    again = load_model(tmp_path / "m").eval()
    ids = torch.randint(2, 128, (4, 12), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
        got = again(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(want, got)
    same = from_builder("repsim.models.text:tiny_bert", seed=3, n_classes=3, hidden=32, heads=2)
    assert all(
        torch.equal(a, b) for a, b in zip(same.parameters(), model.parameters(), strict=True)
    )
