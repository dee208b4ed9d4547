"""Tiny randomly initialised transformers models and plain dict-input modules for tests.

Importable builders (``"tests.models.tiny_hf:tiny_bert"``), so save/load tests can name them by
import path. Nothing is downloaded: every model is built from a config.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VOCAB = 64
SEQ = 10


def _quiet() -> None:
    # transformers is an optional extra (``pip install -e ".[hf]"``): without it, HF tests skip.
    import pytest

    transformers = pytest.importorskip("transformers")

    transformers.logging.set_verbosity_error()


def tiny_bert(num_labels: int = 3, hidden: int = 16, layers: int = 2, seed: int = 0) -> nn.Module:
    """A 2-layer BERT classifier with hidden size 16, vocabulary 64."""
    _quiet()
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=32,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return BertForSequenceClassification(config).eval()


def tiny_gpt2(hidden: int = 32, layers: int = 2, seed: int = 0) -> nn.Module:
    """A 2-layer GPT-2 LM (``Conv1D`` attention/MLP weights, tied LM head), hidden 32, vocab 64."""
    _quiet()
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=VOCAB,
        n_embd=hidden,
        n_layer=layers,
        n_head=2,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config).eval()


class DictNet(nn.Module):
    """A plain module taking keyword inputs: mask-aware mean of token embeddings, then a head.

    Returns a tuple ``(logits, pooled)`` so the output rule's "first element" is exercised.
    """

    def __init__(self, vocab: int = VOCAB, dim: int = 12, n_classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, n_classes)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.emb(input_ids)
        m = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        m = m.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1)
        return self.head(torch.relu(self.hidden(pooled))), pooled


def dict_net(dim: int = 12, n_classes: int = 2, seed: int = 0) -> nn.Module:
    """Builder of :class:`DictNet`."""
    torch.manual_seed(seed)
    return DictNet(dim=dim, n_classes=n_classes)


class TokenNet(nn.Module):
    """A plain module taking one integer tensor of token ids ``[B, T]``."""

    def __init__(self, vocab: int = VOCAB, dim: int = 8, n_classes: int = 2) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids).mean(1))


def token_task(n: int = 96, seed: int = 0, pad_tail: bool = True) -> dict[str, np.ndarray]:
    """A synthetic grouped text task with a spurious token.

    Label 1 iff token 5 occurs; group 1 ("minority") samples have their sequences padded to
    half length. Returns ``input_ids``, ``attention_mask`` ``[n, SEQ]``, ``label``, ``group``.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(6, VOCAB, size=(n, SEQ))
    y = rng.integers(0, 2, size=n)
    g = (rng.random(n) < 0.3).astype(np.int64)
    for i in range(n):
        if y[i]:
            ids[i, rng.integers(1, SEQ // 2)] = 5
    ids[:, 0] = 1  # a [CLS]-like first token
    mask = np.ones((n, SEQ), dtype=np.int64)
    if pad_tail:
        mask[g == 1, SEQ // 2 :] = 0
        ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "label": y.astype(np.int64), "group": g}
