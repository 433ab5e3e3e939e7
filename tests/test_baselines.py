"""The simple likelihood baselines (genlab/baselines.py): Kneser-Ney normalization and hand-computed
values, compressor determinism, the cache, and a model that copies a baseline scoring its figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import genlab
from genlab.baselines import (
    MAX_ORDER,
    KneserNey,
    baselines,
    compressed_bits,
    fit_linear_ar,
    image_baselines,
    independent_log_probs,
    text_baselines,
)
from genlab.data.base import TensorDataset
from genlab.data.spec import DataSpec
from genlab.distributions import to_levels

TEXT = (
    "the cat sat on the mat. the dog sat on the log. a cat and a dog met on a mat by the log.\n" * 6
    + "zebras quietly jump over lazy foxes; the end.\n"
) * 3


def test_kneser_ney_sums_to_one_over_the_vocabulary_for_every_order_and_context():
    rng = np.random.default_rng(0)
    v = 7
    rows = [list(rng.integers(0, v - 2, size=int(rng.integers(3, 15)))) for _ in range(30)]  # ids v-2, v-1 unseen
    kn = KneserNey(v).fit(rows)
    for order in range(1, MAX_ORDER + 1):
        kn.order = order
        contexts = [(), (0,), (v - 1,), tuple(rows[0][:5]), (v - 1, v - 2, 0, 1, 2)]  # empty, unseen, seen
        contexts += [tuple(int(t) for t in rng.integers(0, v, size=int(rng.integers(0, 8)))) for _ in range(40)]
        for ctx in contexts:
            p = kn.probs(ctx)
            assert p.min() > 0 and p.sum() == pytest.approx(1.0, abs=1e-12), (order, ctx)


def test_kneser_ney_matches_hand_computed_probabilities():
    """rows [0 1], [0 2], V = 3. Unigram (order 1): counts 2, 1, 1 of N = 4; n1 = 2, n2 = 1 so
    D = 2 / (2 + 2) = 1/2 and P(0) = 1.5/4 + 0.5 * 3/4 * 1/3 = 1/2, P(1) = P(2) = 1/4.
    Bigram (order 2): contexts <s> -> {0: 2}, 0 -> {1: 1, 2: 1}: D2 = 1/2; the lower order has the
    continuation counts 1, 1, 1 (n1 = 3, n2 = 0, D1 = 1), so it is uniform 1/3; then
    P(1 | 0) = 0.5/2 + 0.5 * 2/2 * 1/3 = 5/12, P(0 | 0) = 1/6, P(0 | <s>) = 1.5/2 + 0.5 * 1/2 * 1/3 = 5/6."""
    kn = KneserNey(3).fit([[0, 1], [0, 2]])
    kn.order = 1
    assert kn.probs(()) == pytest.approx([1 / 2, 1 / 4, 1 / 4], abs=1e-15)
    kn.order = 2
    assert kn.probs((0,)) == pytest.approx([1 / 6, 5 / 12, 5 / 12], abs=1e-15)
    assert kn.probs(()) == pytest.approx([5 / 6, 1 / 12, 1 / 12], abs=1e-15)  # the start context
    assert kn.probs((2,)) == pytest.approx([1 / 3] * 3, abs=1e-15)  # 2 is never followed: lower order
    assert kn.log2_cost([[0, 1]]) == pytest.approx(-math.log2(5 / 6) - math.log2(5 / 12), abs=1e-12)


def test_compressor_baselines_are_deterministic_and_conditional_on_the_train_text():
    train, test = TEXT[:2000], TEXT[2000:]
    for c in ("gzip9", "xz9"):
        bits = compressed_bits(train, test, c)
        assert bits == compressed_bits(train, test, c) and bits % 8 == 0
        assert compressed_bits(train, "", c) == 0
        # a test that repeats the train text costs less given it than alone
        assert compressed_bits(train, train[:500], c) < compressed_bits("", train[:500], c)
    with pytest.raises(ValueError, match="compressor 'zip'"):
        compressed_bits(train, test, "zip")


def _text_splits(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    return str(path), [genlab.load_dataset(str(path), s, block_size=16) for s in ("train", "val", "test")]


class _Copy(genlab.GenerativeModel):
    """A model whose log-probability mass is a baseline's (``score``: ids/images [B, ...] -> [B] nats)."""

    likelihood = "exact"

    def __init__(self, spec, score):
        super().__init__(spec)
        self.discrete, self.score = True, score

    def log_prob(self, x, cond=None):
        return self.score(x)


def test_a_model_that_copies_the_kn_baseline_scores_it_exactly_through_evaluate(tmp_path):
    _, (train, val, test) = _text_splits(tmp_path)
    out = text_baselines(train, val, test, "x")
    kn = KneserNey(test.spec.vocab_size).fit(train.tensors["x"].numpy())
    kn.order = out["baseline/kn/order"]

    def score(x):
        return torch.tensor([-kn.log2_cost([row]) * math.log(2) for row in x.tolist()], dtype=torch.float64)

    got = genlab.evaluate(_Copy(test.spec, score), test, metrics=["likelihood"])["log_prob_bpd"]
    assert got == pytest.approx(out["baseline/kn/bpd"], abs=1e-12)
    # a char tokenizer: one token per character, so both units agree
    for name in ("unigram", "kn", "gzip9", "xz9"):
        assert out[f"baseline/{name}/bpd"] == pytest.approx(out[f"baseline/{name}/bits_per_char"])
    assert out["baseline/kn/bpd"] < out["baseline/unigram/bpd"] < math.log2(test.spec.vocab_size)


def _tiny_images(n, seed):
    """Level ids of 2x2 images with 3 levels where pixel 1 copies pixel 0 (so a linear AR helps)."""
    g = np.random.default_rng(seed)
    ids = g.integers(0, 3, size=(n, 4))
    ids[:, 1] = ids[:, 0]
    spec = DataSpec(name="tiny", kind="image", shape=(1, 2, 2), levels=3)
    return ids, TensorDataset({"x": torch.from_numpy(ids.reshape(n, 1, 2, 2)).double() / 2}, spec, "test")


def test_image_baselines_uniform_and_models_that_copy_them_score_them_exactly():
    train, _ = _tiny_images(300, 0)
    test_ids, test = _tiny_images(50, 1)
    out = image_baselines(train, test_ids, 3)
    assert out["baseline/uniform/bpd"] == math.log2(3)
    table = torch.tensor(independent_log_probs(train, 3))
    ar = fit_linear_ar(train, 3)
    scores = {
        "independent": lambda x: table[torch.arange(4), to_levels(x, 3).flatten(1)].sum(1),
        "linear_ar": lambda x: ar.log_prob(to_levels(x, 3).flatten(1)).detach(),
        "uniform": lambda x: torch.full((len(x),), -4 * math.log(3), dtype=torch.float64),
    }
    for name, score in scores.items():
        got = genlab.evaluate(_Copy(test.spec, score), test, metrics=["likelihood"])["log_prob_bpd"]
        assert got == pytest.approx(out[f"baseline/{name}/bpd"], abs=1e-12), name
    # pixel 1 is a copy of pixel 0: ~3 free pixels of log2 3 bits, not 4
    assert out["baseline/linear_ar/bpd"] < 0.8 * math.log2(3) < out["baseline/independent/bpd"]


def test_baselines_are_cached_per_file_content_and_options(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    path, _ = _text_splits(tmp_path)
    first = baselines(path, block_size=16)
    assert len(list((tmp_path / "cache" / "baselines").glob("*.json"))) == 1
    assert baselines(path, block_size=16) == first
    assert baselines(path, block_size=8) != first  # other options: another entry
    with open(path, "a") as f:
        f.write("one more line of text that changes the test split.\n" * 5)
    assert baselines(path, block_size=16) != first  # the file's content is in the key
    assert len(list((tmp_path / "cache" / "baselines").glob("*.json"))) == 3


@pytest.mark.slow
def test_digits_baselines_are_the_published_figures(tmp_path, monkeypatch):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    out = baselines("digits", "test")
    assert round(out["baseline/uniform/bpd"], 2) == 4.09
    assert round(out["baseline/independent/bpd"], 2) == 2.40
    assert round(out["baseline/linear_ar/bpd"], 2) == 2.09
