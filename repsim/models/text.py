"""A small transformer text classifier built from a config (the ``transformers`` extra).

:func:`tiny_bert` builds a randomly initialised ``BertForSequenceClassification`` from
keyword arguments only, so a study config can name it by import path
(``name = "repsim.models.text:tiny_bert"``) and :func:`repsim.models.save_model` can save and
rebuild it. Nothing is downloaded: the model is made from a ``BertConfig``. ``transformers``
is imported when the function runs, never when repsim is imported.
"""

from __future__ import annotations

from torch import nn

from repsim.errors import ModelError

__all__ = ["tiny_bert"]


def tiny_bert(
    n_classes: int = 2,
    *,
    vocab_size: int = 128,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 128,
    max_len: int = 32,
    dropout: float = 0.1,
) -> nn.Module:
    """A BERT classifier with the given sizes, randomly initialised (no download).

    Parameters
    ----------
    n_classes : int
        Output classes (``num_labels``).
    vocab_size, hidden, layers, heads, intermediate, max_len : int
        ``BertConfig``'s ``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
        ``num_attention_heads``, ``intermediate_size`` and ``max_position_embeddings``.
    dropout : float
        Hidden-layer dropout (attention dropout is 0).

    Returns
    -------
    torch.nn.Module
        ``BertForSequenceClassification``: call it with ``input_ids`` and
        ``attention_mask``; its layers are ``bert.embeddings``, ``bert.encoder.layer.<i>``
        (each ``attention.self`` has ``heads`` heads), ``bert.pooler``, ``classifier``.

    Raises
    ------
    ModelError
        When ``transformers`` is not installed (``pip install "repsim-bias[hf]"``).
    """
    try:
        import transformers
        from transformers import BertConfig, BertForSequenceClassification
    except ImportError as exc:
        raise ModelError(
            'tiny_bert needs the transformers extra: pip install "repsim-bias[hf]".'
        ) from exc
    transformers.logging.set_verbosity_error()
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_len,
        num_labels=n_classes,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    return BertForSequenceClassification(config)
