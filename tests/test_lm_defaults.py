"""The transformer's defaults for small real text (issue 17): dropout from the data size on request,
the user's settings over the class defaults, no dropout outside the training loss."""

import dataclasses
import math

import pytest
import torch
import yaml

import genlab
from genlab.cli import main
from genlab.data.spec import DataSpec
from genlab.models.transformer import (
    SMALL_DATA_DROPOUT,
    Block,
    CausalSelfAttention,
    TransformerLM,
    dropout_for_tokens,
)

TOK = DataSpec(name="tok", kind="tokens", shape=(6,), dtype="int64", value_range=None, levels=5, vocab=tuple("abcde"))
TINY = dict(d_model=8, n_layers=2, n_heads=2)


def dropout_rates(model: TransformerLM) -> set[float]:
    """Every dropout probability in the model: the embeddings', each block's and each attention's."""
    rates = {model.dropout} | {m.p for m in model.modules() if isinstance(m, Block)}
    return rates | {m.dropout for m in model.modules() if isinstance(m, CausalSelfAttention)}


def test_the_rule_is_monotone_bounded_and_hits_its_anchors():
    sizes = [0, 1, 10**3, 10**5, 10**6, 2 * 10**6, 10**7, 3 * 10**7, 10**8, 10**9, 10**12]
    rates = [dropout_for_tokens(n) for n in sizes]
    assert all(0.0 <= r <= SMALL_DATA_DROPOUT for r in rates)
    assert all(a >= b for a, b in zip(rates, rates[1:]))  # more data never means more dropout
    # 0.2 up to 1M tokens, linear in log10 to 0.1 at 10M and 0 from 100M on.
    assert dropout_for_tokens(10**6) == pytest.approx(0.2)
    assert dropout_for_tokens(10**7) == pytest.approx(0.1)
    assert dropout_for_tokens(2 * 10**6) == pytest.approx(0.2 * (1 - math.log10(2) / 2))
    assert dropout_for_tokens(10**8) == dropout_for_tokens(10**12) == 0.0
    assert dropout_for_tokens(None) == SMALL_DATA_DROPOUT  # size unknown: assume a small file
    with pytest.raises(ValueError, match="n_tokens"):
        dropout_for_tokens(-1)


def test_defaults_when_the_user_sets_nothing():
    assert dropout_rates(genlab.build_model("transformer", TOK, **TINY)) == {0.0}  # measured: see the docstring
    assert dropout_rates(genlab.build_model("transformer", TOK, dropout=None, **TINY)) == {SMALL_DATA_DROPOUT}
    # The small-data recipe (decay, cosine, warm-up, clipping) showed no held-out gain: not a default.
    assert not {"weight_decay", "schedule", "warmup", "grad_clip"} & set(TransformerLM.train_defaults)
    # A data set that records its training tokens sizes the dropout by them.
    big = dataclasses.replace(TOK, extra={"train_tokens": 10**7})
    (rate,) = dropout_rates(genlab.build_model("transformer", big, dropout=None, **TINY))
    assert rate == pytest.approx(0.1)
    # Captions of a procedural data set (source="text") need none.
    caps = dataclasses.replace(TOK, kind="image", shape=(1, 2, 2), vocab=("<pad>", "<bos>", "<eos>", "a"))
    caps = dataclasses.replace(caps, extra={"text_len": 4})
    assert dropout_rates(genlab.build_model("transformer", caps, source="text", dropout=None, **TINY)) == {0.0}


def test_the_trainer_reports_the_data_size():
    """dropout=None follows the training tokens the Trainer reports (n sequences of T tokens); a
    user's dropout, and captions, stay as they are."""
    auto = genlab.build_model("transformer", TOK, dropout=None, **TINY)
    auto.on_train_data(10**7 // 6)  # ~10M tokens of T = 6
    (rate,) = dropout_rates(auto)
    assert rate == pytest.approx(dropout_for_tokens(10**7 // 6 * 6)) and rate < SMALL_DATA_DROPOUT
    mine = genlab.build_model("transformer", TOK, dropout=0.3, **TINY)
    mine.on_train_data(10**9)
    assert dropout_rates(mine) == {0.3}


def test_a_trainer_sets_the_dropout_from_its_training_set(tmp_path):
    from genlab.data.text import load_text_file
    from genlab.train import TrainConfig, Trainer

    (tmp_path / "t.txt").write_text("abcd " * 400, encoding="utf-8")
    train, val = (load_text_file(str(tmp_path / "t.txt"), s, block_size=8) for s in ("train", "val"))
    model = genlab.build_model("transformer", train.spec, dropout=None, **TINY)
    model.dropout = -1.0  # a marker: the Trainer must set it
    Trainer(model, train, val, TrainConfig(steps=1, device="cpu", progress=False))
    assert model.dropout == dropout_for_tokens(len(train) * 8) == SMALL_DATA_DROPOUT


def test_user_dropout_overrides_the_rule():
    big = dataclasses.replace(TOK, extra={"train_tokens": 10**9})
    assert dropout_rates(genlab.build_model("transformer", big, dropout=0.3, **TINY)) == {0.3}
    assert dropout_rates(genlab.build_model("transformer", TOK, dropout=0.0, **TINY)) == {0.0}
    with pytest.raises(ValueError, match="dropout"):
        genlab.build_model("transformer", TOK, dropout=1.0, **TINY)


def test_dropout_acts_on_the_training_loss_only():
    """In training mode the loss changes from call to call (dropout is really on) and, in eval mode,
    equals the loss of the same weights built without dropout. log_prob, sample and encode are
    deterministic in either mode and equal to the dropout-free model's (a freshly built model is
    in training mode; sampling from it must not drop units)."""
    torch.manual_seed(0)
    model = genlab.build_model("transformer", TOK, dropout=0.5, **TINY).double()
    plain = genlab.build_model("transformer", TOK, dropout=0.0, **TINY).double()
    plain.load_state_dict(model.state_dict())
    x = torch.randint(0, 5, (4, 6))
    model.train()
    assert model.loss({"x": x})["loss"] != model.loss({"x": x})["loss"]
    lp = model.log_prob(x)
    for mode in (True, False):
        model.train(mode)
        assert torch.equal(model.log_prob(x), lp)
        assert torch.equal(model.encode(x), plain.encode(x))
        g = [torch.Generator().manual_seed(1) for _ in range(2)]
        assert torch.equal(model.sample(3, generator=g[0]), plain.sample(3, generator=g[1]))
    torch.testing.assert_close(lp, plain.log_prob(x), rtol=0, atol=1e-12)
    assert model.loss({"x": x})["loss"] == plain.loss({"x": x})["loss"]  # eval mode
    # ...and is still a distribution: the probabilities of all 5**2 two-token texts sum to 1.
    pairs = torch.cartesian_prod(torch.arange(5), torch.arange(5))
    assert model.log_prob(pairs).exp().sum().item() == pytest.approx(1.0, abs=1e-12)


def _train(tmp_path, *sets: str) -> tuple[dict, dict]:
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 40, encoding="utf-8")
    out = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
    argv = ["train", "transformer", "--data", str(text), "--data-opt", "block_size=8", "--out", str(out)]
    for s in ("steps=1", "d_model=8", "n_layers=1", "n_heads=1", "eval_every=0", "sample_every=0", *sets):
        argv += ["--set", s]
    assert main([*argv, "--quiet"]) == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    return cfg["train"], cfg["model_kwargs"]


def test_genlab_train_applies_the_defaults_under_the_users_settings(tmp_path):
    train, model = _train(tmp_path)
    assert (train["weight_decay"], train["schedule"], train["warmup"], train["grad_clip"]) == (0.0, "constant", 0, None)
    assert (train["batch_size"], train["lr"]) == (32, 2e-3)  # the class's train_defaults
    assert model["dropout"] == 0.0
    train, model = _train(
        tmp_path, "weight_decay=0.1", "schedule=cosine", "warmup=100", "grad_clip=1.0", "dropout=0.05", "lr=0.001"
    )
    assert (train["weight_decay"], train["schedule"], train["warmup"], train["grad_clip"]) == (0.1, "cosine", 100, 1.0)
    assert train["lr"] == 0.001
    assert model["dropout"] == 0.05
    assert _train(tmp_path, "dropout=null")[1]["dropout"] is None  # by the data size (the Trainer tells it)
