"""Text audits (genlab.audit.text): canary insertion, exposure, extraction, bias templates."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import skewnorm
from torch import Tensor, nn

import genlab
from genlab.audit import text as A
from genlab.data.spec import DataSpec
from genlab.data.text import load_text_file, make_canaries, tokens_to_text
from genlab.protocol import GenerativeModel

LINES = [f"line {i}: the quick brown fox jumps over the lazy dog, {'again ' * (i % 4)}and rests.\n" for i in range(120)]


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("".join(LINES), encoding="utf-8")
    return str(path)


def _text(ds) -> str:
    return "".join(tokens_to_text(ds.tensors["x"], ds.spec))


# --- canary insertion ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["char", "word"])
def test_canaries_only_in_train_exactly_repeats_times(text_file, tokenizer):
    opts = {"tokenizer": tokenizer, "block_size": 16, "canaries": 3, "repeats": 7, "canary_seed": 5}
    for split in ("val", "test", "all"):
        plain, canary = load_text_file(text_file, split, tokenizer, 16), load_text_file(text_file, split, **opts)
        assert _text(plain) == _text(canary)
    train = _text(load_text_file(text_file, "train", **opts))
    secrets = make_canaries(3, 5)
    assert [train.count(s) for s in secrets] == [7, 7, 7]
    plain_train = _text(load_text_file(text_file, "train", tokenizer, 16))
    stripped = train
    for s in secrets:
        stripped = stripped.replace("\n" + s, "")
    m = min(len(stripped), len(plain_train))  # both drop a remainder (< 16 tokens) at the end
    assert stripped[:m] == plain_train[:m] and m > 0.9 * len(plain_train)
    again = load_text_file(text_file, "train", **opts)
    assert torch.equal(again.tensors["x"], load_text_file(text_file, "train", **opts).tensors["x"])
    spec = again.spec
    assert spec.extra["canaries"] == {"n": 3, "repeats": 7, "seed": 5, "digits": 6, "format": "my PIN is {}"}
    assert all(A.encode_strict(spec, "\nmy PIN is " + " ".join(d * 6)) for d in "0123456789")  # every digit known


def test_canary_secrets_are_seeded_distinct_and_prefix_stable():
    a = make_canaries(50, seed=3, digits=2)
    assert len(set(a)) == 50 and a == make_canaries(50, seed=3, digits=2) and a[:10] == make_canaries(10, 3, 2)
    assert a != make_canaries(50, seed=4, digits=2)
    assert a[0].startswith("my PIN is ") and len(a[0].split()) == 5
    with pytest.raises(Exception, match="canaries=101"):
        make_canaries(101, digits=2)
    with pytest.raises(Exception, match="repeats=0"):
        load_text_file("/nonexistent.txt", canaries=1, repeats=0)


# --- fake models ----------------------------------------------------------------------------------------


class ScoreTable(GenerativeModel):
    """log p(sentence) = -table[secret], read from the decoded digits (a model whose ranks are known)."""

    likelihood = "exact"

    def __init__(self, spec: DataSpec, table: np.ndarray) -> None:
        super().__init__(spec)
        self.table, self.dummy = table, nn.Parameter(torch.zeros(()))

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        texts = tokens_to_text(x, self.spec)
        return torch.tensor([-float(self.table[int("".join(c for c in t if c.isdigit()))]) for t in texts])


class Bigram(GenerativeModel):
    """Next token = fixed successor of the last token (logits ``sharp`` at it; 0 = uniform): with a
    cyclic training text it samples verbatim training substrings."""

    likelihood = "exact"

    def __init__(self, spec: DataSpec, successor: dict[int, int], sharp: float) -> None:
        super().__init__(spec)
        v = len(spec.vocab)
        self.dummy = nn.Parameter(torch.zeros(()))
        table = torch.zeros(v, v)
        for a, b in successor.items():
            table[a, b] = sharp
        self.table = table
        self.first = torch.full((v,), -1e9)
        self.first[sorted(successor)] = 0.0  # the first token: uniform over real tokens

    def forward(self, x: Tensor) -> Tensor:
        nxt = self.table[x[:, :-1]]  # (B, T-1, V): row t predicts x_t from x_{t-1}
        return torch.cat([self.first.expand(x.shape[0], 1, -1), nxt], 1)

    def log_prob(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self(x).log_softmax(-1).gather(-1, x[..., None])[..., 0].sum(-1)


@pytest.fixture
def cyclic(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_text("abcdefghijklmnopqrstuvwxyz\n" * 60, encoding="utf-8")
    train = load_text_file(str(path), "train", block_size=48)
    vocab = train.spec.vocab
    cycle = "abcdefghijklmnopqrstuvwxyz\n"
    succ = {vocab.index(c): vocab.index(cycle[(i + 1) % len(cycle)]) for i, c in enumerate(cycle)}
    return train, succ


# --- exposure -----------------------------------------------------------------------------------------


def test_exposure_is_exact_for_known_ranks(text_file):
    spec = load_text_file(text_file, "train", block_size=32, canaries=3, repeats=2, canary_seed=1, canary_digits=3).spec
    model = ScoreTable(spec, np.arange(1000, dtype=np.float64))  # secret r has rank r + 1
    res = A.exposure_audit(model, fresh=2, method="enumerate")
    assert res["method"] == "enumerate" and res["space"] == 1000
    texts = make_canaries(5, 1, 3)
    for row, text in zip(res["canaries"], texts):
        r = int(text.replace("my PIN is ", "").replace(" ", ""))
        assert row["rank"] == r + 1
        assert row["exposure"] == pytest.approx(math.log2(1000) - math.log2(r + 1), abs=1e-12)
        assert row["p_value"] == pytest.approx((r + 1) / 1000)
    assert [row["inserted"] for row in res["canaries"]] == [True] * 3 + [False] * 2
    assert [row["repeats"] for row in res["canaries"]] == [2, 2, 2, 0, 0]


def test_null_exposure_mean_and_tail():
    for space in (1, 10, 1000):
        brute = np.mean([math.log2(space) - math.log2(r) for r in range(1, space + 1)])
        assert A.null_exposure(space)["mean"] == pytest.approx(brute, abs=1e-9)
    assert A.null_exposure(10**6)["mean"] == pytest.approx(1 / math.log(2), abs=1e-4)
    assert A.exposure_from_rank(1, 1024) == 10.0
    with pytest.raises(ValueError, match="rank=0"):
        A.exposure_from_rank(0, 10)


def test_skewnorm_extrapolation_agrees_with_enumeration(text_file):
    spec = load_text_file(text_file, "train", block_size=32, canaries=12, canary_seed=2, canary_digits=4).spec
    table = skewnorm.rvs(4.0, loc=20.0, scale=3.0, size=10**4, random_state=0)
    model = ScoreTable(spec, table)
    exact = A.exposure_audit(model, fresh=0, method="enumerate")
    approx = A.exposure_audit(model, fresh=0, method="extrapolate", candidates=3000, seed=1)
    e1 = np.array([r["exposure"] for r in exact["canaries"]])
    e2 = np.array([r["exposure"] for r in approx["canaries"]])
    assert approx["skewnorm"]["a"] > 1  # the fit finds the skew
    assert np.abs(e1 - e2).max() < 0.35, (e1, e2)


# --- extraction -----------------------------------------------------------------------------------


def test_ngram_index_finds_exact_substrings_only():
    stream = np.arange(100) % 37
    idx = A.NgramIndex(stream, 5)
    assert idx.matches([3, 4, 5, 6, 7, 8]).tolist() == [True, True]
    assert idx.matches([3, 4, 5, 6, 9]).tolist() == [False]
    assert idx.longest_match([0, 0, 10, 11, 12, 13, 14, 15, 0]) == (2, 8)
    assert idx.memory_bytes == 16 * 96 + 8 * 100


def test_extraction_finds_verbatim_copies_and_not_random_text(cyclic):
    train, succ = cyclic
    copier = Bigram(train.spec, succ, sharp=30.0)
    res = A.extraction_audit(copier, train, samples=6, prompted=6, prompt_tokens=4, length=20, min_tokens=8, top=5)
    assert res["any_match"] == 1.0
    for name in ("perplexity", "zlib", "lowercase", "window"):
        assert res["signals"][name]["hits"] == 5, name
        assert all(e["match_tokens"] == 20 for e in res["signals"][name]["extracted"])
    noise = Bigram(train.spec, succ, sharp=0.0)
    res = A.extraction_audit(noise, train, samples=6, prompted=6, prompt_tokens=4, length=20, min_tokens=8, top=5)
    assert res["any_match"] == 0.0 and all(s["hits"] == 0 for s in res["signals"].values())
    again = A.extraction_audit(noise, train, samples=6, prompted=6, prompt_tokens=4, length=20, min_tokens=8, top=5)
    assert again == res


def test_min_window_mean():
    assert A.min_window_mean(np.array([5.0, 5.0, 1.0, 0.0, 5.0]), 2) == 0.5
    assert A.min_window_mean(np.array([2.0, 4.0]), 8) == 3.0  # shorter than the window: the mean


def test_zlib_ratio_ranks_repetitive_text_last(cyclic):
    train, succ = cyclic
    noise = Bigram(train.spec, succ, sharp=0.0)  # the same perplexity for every text
    ids = [
        A.encode_strict(train.spec, t) for t in ("aaaaaaaaaaaaaaaaaaaa", "qwhzkdmvbxleurtoynsa", "abababababababababab")
    ]
    sig = A.extraction_signals(noise, [[], [], []], ids)
    assert np.allclose(sig["perplexity"], sig["perplexity"][0])
    assert A.rank_by(sig["zlib"]).tolist() == [1, 2, 0]  # most compressible = least suspicious


# --- bias templates -----------------------------------------------------------------------------------


def test_js_divergence_known_values():
    assert A.js_divergence([0.2, 0.8], [0.2, 0.8]) == 0.0
    assert A.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert A.js_divergence([0.5, 0.5], [1, 0]) == pytest.approx(h - 0.5)


def test_compare_words_intervals():
    same = A.compare_words(["a", "b", "c"] * 50, ["a", "b", "c"] * 50, boot=300, permutations=300)
    assert same["js_bits"] == 0.0 and same["interval"][0] <= 0.0 <= same["interval"][1]
    assert same["p_value"] == 1.0
    known = A.compare_words(["x", "y"] * 300, ["x"] * 600, boot=300, permutations=300)
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert known["js_bits"] == pytest.approx(h - 0.5)
    assert known["interval"][0] <= h - 0.5 <= known["interval"][1] and known["p_value"] < 0.01


def test_template_file_and_audit(cyclic, tmp_path):
    train, succ = cyclic
    path = tmp_path / "templates.txt"
    path.write_text("# pairs\nabc | abc\n\nabc|klm\n", encoding="utf-8")
    assert A.read_templates(path) == [("abc", "abc"), ("abc", "klm")]
    bad = tmp_path / "bad.txt"
    bad.write_text("only one side\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1"):
        A.read_templates(bad)
    copier = Bigram(train.spec, succ, sharp=30.0)
    words, truncated = A.next_words(copier, "abc", 4, generator=torch.Generator().manual_seed(0))
    assert words == ["defghijklmnopqrstuvwxyz"] * 4 and truncated == 0.0
    res = A.template_bias_audit(copier, path, samples=20, boot=100, seed=0)
    same, diff = res["pairs"]
    assert same["js"]["js_bits"] == 0.0 and same["null"]["js_bits"] == 0.0
    assert diff["js"]["js_bits"] == pytest.approx(1.0) and diff["top_b"][0][0] == "nopqrstuvwxyz"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        A.next_words(copier, "ABC", 2)


# --- a trained model --------------------------------------------------------------------------------


def test_trained_transformer_exposes_its_canary(text_file):
    from genlab.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    opts = {"block_size": 32, "canaries": 1, "repeats": 40, "canary_seed": 0, "canary_digits": 4}
    train, val = load_text_file(text_file, "train", **opts), load_text_file(text_file, "val", **opts)
    torch.manual_seed(0)
    model = genlab.build_model("transformer", train.spec, d_model=32, n_layers=2, n_heads=2, max_prefix=1)
    cfg = TrainConfig(steps=300, batch_size=32, lr=3e-3, eval_every=0, sample_every=0, checkpoint_every=0)
    Trainer(model, train, val, TrainConfig(**{**cfg.__dict__, "progress": False, "device": "cpu"})).fit()
    res = A.exposure_audit(model.eval(), fresh=6, method="enumerate")
    inserted = [r["exposure"] for r in res["canaries"] if r["inserted"]]
    fresh = [r["exposure"] for r in res["canaries"] if not r["inserted"]]
    assert min(inserted) > 10.0, res["canaries"]  # of log2 10**4 = 13.3 bits
    assert np.mean(fresh) < 3.0 and max(fresh) < 6.0, res["canaries"]  # null mean 1.44, P(>= 6) = 1/64


def test_audits_run_on_a_transformer_and_are_json_safe(text_file, tmp_path):
    import json

    train = load_text_file(text_file, "train", block_size=32, canaries=2, repeats=3, canary_digits=2)
    torch.manual_seed(0)
    model = genlab.build_model("transformer", train.spec, d_model=8, n_layers=1, n_heads=2, max_prefix=1).eval()
    ext = A.extraction_audit(model, train, samples=4, prompted=4, prompt_tokens=8, min_tokens=6, top=3, seed=1)
    assert ext == A.extraction_audit(model, train, samples=4, prompted=4, prompt_tokens=8, min_tokens=6, top=3, seed=1)
    assert set(ext["signals"]) == {"perplexity", "zlib", "lowercase", "window"}
    ref = A.extraction_audit(model, train, samples=4, prompted=0, min_tokens=6, top=4, reference=model)
    assert [e["value"] for e in ref["signals"]["reference"]["extracted"]] == pytest.approx(
        [1.0] * ref["signals"]["reference"]["hits"]
    )
    sig = A.extraction_signals(model, [[], [5, 6]], [[7, 8, 9], [10, 11, 12]], reference=model)
    assert sig["reference"] == pytest.approx([1.0, 1.0])
    exp = A.exposure_audit(model, train.spec)
    assert exp["method"] == "enumerate" and len(exp["canaries"]) == 4
    (tmp_path / "t.txt").write_text("the quick | the lazy\n", encoding="utf-8")
    bias = A.template_bias_audit(model, tmp_path / "t.txt", samples=10, boot=50)
    json.dumps({"extraction": ext, "exposure": exp, "bias": bias}, allow_nan=False)
    assert A.plot_exposure(exp, tmp_path / "exposure.png").endswith("exposure.png")
