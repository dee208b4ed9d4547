"""Token-aware capture: cls, last, mean_tokens and tokens on transformers, heads, masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from repsim.capture import ActivationStore, record, record_reductions, record_shard
from repsim.capture.hooks import reduce_activation
from repsim.data import as_grouped
from repsim.errors import ConfigError, DataError, ShapeError
from repsim.layers import head_count, select_layers
from repsim.models import set_output_rule
from repsim.similarity import compare

pytest.importorskip("transformers")

from tests.models.tiny_hf import SEQ, TokenNet, tiny_bert, tiny_gpt2, token_task  # noqa: E402

TOKEN_REDUCTIONS = ("cls", "last", "mean_tokens", "tokens")


def grouped(task: dict[str, np.ndarray]):
    return as_grouped(
        {"input_ids": task["input_ids"], "attention_mask": task["attention_mask"]},
        task["label"],
        task["group"],
    )


@pytest.fixture(scope="module")
def task():
    t = token_task(n=24, seed=1)
    assert (t["attention_mask"] == 0).any()  # some rows are padded
    return t


def reference(hidden: torch.Tensor, mask: np.ndarray, reduction: str) -> np.ndarray:
    """The reductions computed by hand from ``[N, T, D]`` hidden states (float64)."""
    h = hidden.detach().double().numpy()
    m = mask.astype(bool)
    if reduction == "tokens":
        return h[m]
    first = m.argmax(1)
    last = m.shape[1] - 1 - m[:, ::-1].argmax(1)
    rows = np.arange(len(h))
    if reduction == "cls":
        return h[rows, first]
    if reduction == "last":
        return h[rows, last]
    return (h * m[..., None]).sum(1) / m.sum(1, keepdims=True)


def hidden_states(model: nn.Module, task: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        out = model(
            input_ids=torch.as_tensor(task["input_ids"]),
            attention_mask=torch.as_tensor(task["attention_mask"]),
            output_hidden_states=True,
        )
    return out.hidden_states


def check_against_hidden_states(model, task, layer_of_state):
    data = grouped(task)
    states = hidden_states(model, task)
    layers = list(layer_of_state.values())
    caps = record_reductions(
        model, data, {r: layers for r in TOKEN_REDUCTIONS}, batch_size=7, progress=False
    )
    for reduction in TOKEN_REDUCTIONS:
        cap = caps[reduction]
        for i, layer in layer_of_state.items():
            want = reference(states[i], task["attention_mask"], reduction)
            np.testing.assert_allclose(cap[layer], want, rtol=1e-5, atol=1e-5)
    tok = caps["tokens"]
    rows, pos = np.nonzero(task["attention_mask"])
    np.testing.assert_array_equal(tok.token_row, rows)
    np.testing.assert_array_equal(tok.token_position, pos)
    np.testing.assert_array_equal(tok.sample_id, data.sample_id[rows])
    np.testing.assert_array_equal(tok.groups, data.groups[rows])
    np.testing.assert_array_equal(tok.labels, data.y[rows])
    return caps


def test_bert_token_reductions_match_hidden_states(task):
    model = tiny_bert()
    check_against_hidden_states(
        model,
        task,
        {0: "bert.embeddings", 1: "bert.encoder.layer.0", 2: "bert.encoder.layer.1"},
    )


def test_gpt2_token_reductions_match_hidden_states(task):
    model = set_output_rule(tiny_gpt2(), token="last")
    caps = check_against_hidden_states(
        model, task, {0: "transformer.drop", 1: "transformer.h.0", 2: "transformer.ln_f"}
    )
    # the logits are the LM head at the last real token, by the output rule
    with torch.no_grad():
        lm = model(
            input_ids=torch.as_tensor(task["input_ids"]),
            attention_mask=torch.as_tensor(task["attention_mask"]),
        ).logits
    want = reference(lm, task["attention_mask"], "last")
    np.testing.assert_allclose(caps["last"].logits, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("which", ["bert", "gpt2"])
def test_padding_does_not_change_a_sample(which):
    """A padded sample in a batch gives the rows of that sample alone, unpadded."""
    model = tiny_bert() if which == "bert" else set_output_rule(tiny_gpt2(), token="last")
    layers = (
        ["bert.encoder.layer.0", "bert.encoder.layer.1"]
        if which == "bert"
        else ["transformer.h.0", "transformer.ln_f"]
    )
    rng = np.random.default_rng(0)
    ids = rng.integers(6, 60, size=(4, SEQ))
    mask = np.ones_like(ids)
    short = 6
    mask[2, short:] = 0  # sample 2 is padded to SEQ
    ids[2, short:] = 0
    batch = as_grouped({"input_ids": ids, "attention_mask": mask}, np.zeros(4, int), np.zeros(4))
    alone = as_grouped(
        {"input_ids": ids[2:3, :short], "attention_mask": np.ones((1, short), int)},
        np.zeros(1, int),
        np.zeros(1),
    )
    reds = {r: layers for r in TOKEN_REDUCTIONS}
    padded = record_reductions(model, batch, reds, batch_size=4, progress=False)
    single = record_reductions(model, alone, reds, progress=False)
    for r in ("mean_tokens", "last", "cls"):
        for layer in layers:
            np.testing.assert_allclose(padded[r][layer][2], single[r][layer][0], atol=1e-5)
    rows = padded["tokens"].token_row == 2
    assert rows.sum() == short
    for layer in layers:
        np.testing.assert_allclose(
            padded["tokens"][layer][rows], single["tokens"][layer], atol=1e-5
        )
    # and the padding does change the naive (unmasked) mean: the mask really is used
    flat = record(model, batch, layers[:1], reduction="flatten", progress=False)[layers[0]]
    naive = flat[2].reshape(SEQ, -1).mean(0)
    assert not np.allclose(naive, padded["mean_tokens"][layers[0]][2], atol=1e-3)


def test_heads_of_self_attention_and_output_projection(task):
    data = grouped(task)
    bert = tiny_bert()
    self_attn = "bert.encoder.layer.1.attention.self"
    assert head_count(bert, self_attn) == 2
    whole = record(bert, data, [self_attn], reduction="mean_tokens", progress=False)[self_attn]
    heads = record(
        bert,
        data,
        [f"{self_attn}:head=0", f"{self_attn}:head=1"],
        reduction="mean_tokens",
        progress=False,
    )
    np.testing.assert_allclose(heads[f"{self_attn}:head=0"], whole[:, :8], atol=1e-6)
    np.testing.assert_allclose(heads[f"{self_attn}:head=1"], whole[:, 8:], atol=1e-6)
    # the same tensor enters BERT's output dense: heads side by side
    dense_in = record(
        bert,
        data,
        ["bert.encoder.layer.1.attention.output.dense:input"],
        reduction="mean_tokens",
        progress=False,
    )
    np.testing.assert_allclose(
        dense_in["bert.encoder.layer.1.attention.output.dense:input"], whole, atol=1e-6
    )

    gpt2 = set_output_rule(tiny_gpt2(), token="last")
    proj = "transformer.h.0.attn.c_proj:input"
    assert head_count(gpt2, proj) == 2
    whole = record(gpt2, data, [proj], reduction="tokens", progress=False)[proj]
    one = record(gpt2, data, [f"{proj}:head=1"], reduction="tokens", progress=False)
    np.testing.assert_allclose(one[f"{proj}:head=1"], whole[:, 16:], atol=1e-6)


def test_heads_are_refused_where_the_heads_are_mixed():
    gpt2 = tiny_gpt2()
    with pytest.raises(ConfigError, match="no per-head outputs"):
        select_layers(gpt2, "transformer.h.0.attn:head=0")  # after c_proj
    with pytest.raises(ConfigError, match="no per-head outputs"):
        select_layers(gpt2, "transformer.h.0.mlp.c_proj:input:head=0")  # an MLP, no heads
    with pytest.raises(ConfigError, match="2 heads"):
        select_layers(gpt2, "transformer.h.0.attn.c_proj:input:head=2")
    with pytest.raises(ConfigError, match="non-negative integer"):
        select_layers(gpt2, "transformer.h.0.attn.c_proj:input:head=x")
    bert = tiny_bert()
    assert select_layers(bert, "bert.encoder.layer.*.attention.self:head=1") == [
        "bert.encoder.layer.0.attention.self:head=1",
        "bert.encoder.layer.1.attention.self:head=1",
    ]
    # a user-declared head count
    net = nn.Sequential(nn.Linear(4, 6))
    with pytest.raises(ConfigError):
        head_count(net, "0")
    net[0].repsim_heads = 3
    assert head_count(net, "0") == 3
    out = record(
        net,
        as_grouped(np.ones((5, 4), np.float32), np.zeros(5, int), np.zeros(5)),
        ["0:head=2"],
        progress=False,
    )
    assert out["0:head=2"].shape == (5, 2)


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(2, 3, 3)
        self.act = nn.ReLU()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.conv(x)).mean(2))


def test_mean_of_3d_outputs_needs_a_channel_first_module(task):
    data = grouped(task)
    with pytest.raises(ShapeError, match="token reduction"):
        record(tiny_bert(), data, ["bert.encoder.layer.0"], reduction="mean", progress=False)
    with pytest.raises(ShapeError, match="token reduction"):
        reduce_activation(torch.zeros(2, 5, 4), "max")
    net = Conv1dNet()
    x = torch.randn(6, 2, 9, generator=torch.Generator().manual_seed(0))
    conv_data = as_grouped(x.numpy(), np.zeros(6, int), np.zeros(6))
    cap = record(net, conv_data, ["conv", "conv:input"], reduction="mean", progress=False)
    with torch.no_grad():
        want = net.conv(x).mean(2).numpy()
    np.testing.assert_allclose(cap["conv"], want, atol=1e-6)
    np.testing.assert_allclose(cap["conv:input"], x.mean(2).numpy(), atol=1e-6)
    with pytest.raises(ShapeError, match="repsim_layout"):  # a ReLU: layout unknown
        record(net, conv_data, ["act"], reduction="max", progress=False)
    net.act.repsim_layout = "channels"
    cap = record(net, conv_data, ["act"], reduction="max", progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(cap["act"], torch.relu(net.conv(x)).amax(2).numpy(), atol=1e-6)


def test_token_reductions_on_other_shapes():
    # a 2-D output has no token axis: kept for cls/last/mean_tokens, refused for tokens
    out = reduce_activation(torch.ones(3, 4), "cls")
    assert out.shape == (3, 4)
    with pytest.raises(ShapeError, match="tokens"):
        reduce_activation(torch.ones(3, 4), "tokens")
    with pytest.raises(ShapeError, match=r"\[batch, tokens, features\]"):
        reduce_activation(torch.ones(3, 4, 5, 6), "mean_tokens")
    with pytest.raises(ShapeError, match="attention_mask"):
        reduce_activation(torch.ones(3, 4, 5), "last", attention_mask=torch.ones(3, 6))
    mask = torch.ones(3, 4)
    mask[1] = 0
    with pytest.raises(DataError, match=r"rows \[1\]"):
        reduce_activation(torch.ones(3, 4, 5), "mean_tokens", attention_mask=mask)


def test_tokens_capture_through_the_store_and_compare(task, tmp_path):
    data = grouped(task)
    model = tiny_bert()
    layers = ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    mem = record(model, data, layers, reduction="tokens", progress=False)
    store = ActivationStore(tmp_path / "cache")
    cached = record(model, data, layers, reduction="tokens", store=store, progress=False)
    again = record(model, data, layers, reduction="tokens", store=store, progress=False)
    for layer in layers:
        np.testing.assert_array_equal(np.asarray(cached[layer][...]), mem[layer])
        np.testing.assert_array_equal(np.asarray(again[layer][...]), mem[layer])
    np.testing.assert_array_equal(again.token_row, mem.token_row)
    assert store.verify() == []
    info = store.entries()[0]
    assert {(layer, r) for layer, r, _ in info.layers} == {(layer, "tokens") for layer in layers}
    # a per-sample reduction of the same layers lives beside it in the same entry
    cls = record(model, data, layers, reduction="cls", store=store, progress=False)
    assert cls.n_samples == len(data) and again.n_samples == int(task["attention_mask"].sum())
    # token rows compare row for row, and per group by each token's group
    other = record(tiny_bert(seed=1), data, layers, reduction="tokens", progress=False)
    table = compare(mem, other, groups=True)
    rows = table.to_records()
    assert {r["group"] for r in rows} == {None, 0, 1}
    whole = [r for r in rows if r["group"] is None]
    assert all(r["n"] == mem.n_samples for r in whole)
    # a subset keeps the token bookkeeping
    sub = mem.subset(mem.token_row < 3)
    assert set(sub.token_row) == {0, 1, 2} and sub.token_position is not None
    # removing the tokens array also removes its row index
    store.rm(info.key, [(layers[0], "tokens")])
    names = {p.name for p in (store.path / info.key).iterdir()}
    assert not any(n.startswith("bert.encoder.layer.0@") and "token" in n for n in names)
    assert store.verify() == []
    with pytest.raises(ConfigError, match="tokens"):
        record_shard(
            model,
            data,
            layers,
            reduction="tokens",
            store=store,
            shard=(0, 1),
            chunk_rows=8,
            progress=False,
        )


def test_tokens_without_a_mask_and_from_dict_datasets(task):
    ids = task["input_ids"]
    net = TokenNet()
    data = as_grouped(ids, task["label"], task["group"])  # a tensor of ids, no mask
    cap = record(net, data, ["emb"], reduction="tokens", progress=False)
    assert cap["emb"].shape == (len(ids) * SEQ, 8)
    np.testing.assert_array_equal(cap.token_position, np.tile(np.arange(SEQ), len(ids)))
    with torch.no_grad():
        np.testing.assert_allclose(cap["emb"], net.emb(torch.as_tensor(ids)).reshape(-1, 8).numpy())

    # dict items from a torch Dataset and a DataLoader give the GroupedData's numbers
    model = tiny_bert()
    items = [
        {
            "input_ids": torch.as_tensor(task["input_ids"][i]),
            "attention_mask": torch.as_tensor(task["attention_mask"][i]),
            "label": int(task["label"][i]),
            "group": int(task["group"][i]),
        }
        for i in range(len(ids))
    ]

    class Items(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int):
            return items[i]

    want = record(model, grouped(task), ["bert.encoder.layer.1"], reduction="last", progress=False)
    for source in (Items(), DataLoader(Items(), batch_size=5)):
        got = record(model, source, ["bert.encoder.layer.1"], reduction="last", progress=False)
        np.testing.assert_allclose(
            got["bert.encoder.layer.1"], want["bert.encoder.layer.1"], atol=1e-6
        )
        np.testing.assert_array_equal(got.groups, task["group"])
    tok = record(
        model, Items(), ["bert.encoder.layer.1"], reduction="tokens", store=None, progress=False
    )
    assert tok.n_samples == int(task["attention_mask"].sum())


def test_tokens_of_a_torch_dataset_through_the_store(task, tmp_path):
    """The row count of a tokens array is counted from the masks when it is not known ahead."""
    model = tiny_bert()
    ds = grouped(task).to_torch()
    cap = record(
        model,
        ds,
        ["bert.encoder.layer.0"],
        reduction="tokens",
        store=tmp_path / "c",
        progress=False,
    )
    assert cap["bert.encoder.layer.0"].shape[0] == int(task["attention_mask"].sum())
    assert ActivationStore(tmp_path / "c").verify() == []


def test_token_layers_of_different_lengths_need_separate_captures():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, 4)
            self.extra = nn.Identity()
            self.fc = nn.Linear(4, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            h = self.emb(ids)
            h2 = self.extra(torch.cat([h, h[:, :1]], 1))  # one more token
            return self.fc(h2.mean(1))

    data = as_grouped(np.ones((3, 5), np.int64), np.zeros(3, int), np.zeros(3))
    with pytest.raises(ShapeError, match="separate record"):
        record(Two(), data, ["emb", "extra"], reduction="tokens", progress=False)
    assert record(Two(), data, ["extra"], reduction="tokens", progress=False)["extra"].shape == (
        18,
        4,
    )


def test_a_backbone_without_logits_needs_a_declared_rule(task):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    backbone = BertModel(config).eval()
    data = grouped(task)
    with pytest.raises(ShapeError, match="set_output_rule"):
        record(backbone, data, ["encoder.layer.0"], reduction="cls", progress=False)
    set_output_rule(backbone, logits="last_hidden_state", token="first")
    cap = record(backbone, data, ["encoder.layer.0"], reduction="cls", progress=False)
    np.testing.assert_allclose(cap.logits, cap["encoder.layer.0"], atol=1e-6)  # same [CLS] state
