"""Multimodal summarization (issue 12, part "Multimodal summarization"): the ``shapes-summary`` data
(what the text and the image each hold is what ``source`` says), summaries that parse back exactly,
the summarizer's exact log p(summary | image, caption) (sums to one over every summary, with either
input absent too), its causality, the issue's test -- after brief fixed-seed training, fused
summaries beat the text-only baseline on the facts absent from the text -- and ``genlab summarize``."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import SPECS
from PIL import Image

import genlab
from genlab.cli import main
from genlab.data import InvalidDataError
from genlab.data import summary as S
from genlab.data.shapes import COLOUR_NAMES, REGION_PHRASES, SHAPE_NAMES, caption, render_coloured
from genlab.metrics.summarization import summarization_report
from genlab.train import TrainConfig

TRIPLES = SPECS["triples"]  # image [3, 8, 8] + caption of 5 tokens + summary of 3 tokens, vocabulary of 5
TINY = dict(d_model=16, n_layers=2, n_heads=2, channels=4, hidden=16)


def _one_line(info: pytest.ExceptionInfo) -> str:
    msg = str(info.value)
    assert msg and "\n" not in msg
    return msg


# --- the data ---------------------------------------------------------------------------------------


def test_data_is_deterministic_and_the_sources_are_true():
    ds = genlab.load_dataset("shapes-summary", "val", n=400, size=16)
    again = genlab.load_dataset("shapes-summary", "val", n=400, size=16)
    head = genlab.load_dataset("shapes-summary", "val", n=50, size=16)
    for k, v in ds.tensors.items():
        assert torch.equal(v, again.tensors[k]) and torch.equal(v[:50], head.tensors[k]), k
    other = genlab.load_dataset("shapes-summary", "val", n=400, size=16, seed=1)
    assert not torch.equal(other.tensors["source"], ds.tensors["source"])
    assert ds.spec.modality_keys == ("x", "text", "summary") and ds.spec.vocab == S.SUMMARY_VOCAB
    assert S.SUMMARY_VOCAB[: len(genlab.data.shapes.CAPTION_VOCAB)] == genlab.data.shapes.CAPTION_VOCAB

    factors, source = ds.tensors["factors"].numpy(), ds.tensors["source"].numpy()
    full = render_coloured(factors, 16)
    for i in range(len(ds)):
        words = S.decode_summary(ds.tensors["text"][i]).split()
        shape, colour = SHAPE_NAMES[factors[i, 0]], COLOUR_NAMES[factors[i, 5]]
        full_caption = caption(factors[i])
        region = next(p for p in REGION_PHRASES.values() if full_caption.endswith(p))
        c, s, p = source[i]
        # the caption states a fact exactly when the source says the text has it
        assert (words[2] == colour) == (c != S.IMAGE_ONLY) and (words[2] == "___") == (c == S.IMAGE_ONLY)
        assert (words[3] == shape) == (s == S.BOTH) and (words[3] == "shape") == (s == S.IMAGE_ONLY)
        tail = " ".join(words[4:])
        assert (tail == region) == (p == S.BOTH) and (tail == "somewhere") == (p == S.IMAGE_ONLY)
        # the image shows the colour unless the source says it is in the text only: then it is white
        x = ds.tensors["x"][i].numpy()
        if c == S.TEXT_ONLY:
            assert np.array_equal(x, np.repeat(full[i].max(0, keepdims=True), 3, 0))
        else:
            assert np.array_equal(x, full[i])
        f = S.parse_summary(S.decode_summary(ds.tensors["summary"][i]))
        assert (f["colour"], f["shape"]) == (factors[i, 5], factors[i, 0])
    assert set(source[:, 0]) == {0, 1, 2} and set(source[:, 1]) == set(source[:, 2]) == {1, 2}
    assert abs((source[:, 0] == S.TEXT_ONLY).mean() - 0.125) < 0.05  # p(stated) * p(hidden) = 0.5 * 0.25


def test_captions_and_summaries_round_trip():
    assert S.mask_caption("a small red heart in the top left", colour=True) == "a small ___ heart in the top left"
    assert (
        S.mask_caption("a small red heart in the top left", shape=True, position=True) == "a small red shape somewhere"
    )
    ids = S.encode_prompt("a small ___ shape in the top left")
    assert ids.shape == (S.TEXT_LEN,) and S.decode_summary(ids) == "a small ___ shape in the top left"
    with pytest.raises(InvalidDataError, match="'purple'"):
        S.encode_prompt("a small purple heart")
    with pytest.raises(InvalidDataError, match="at most 8"):
        S.encode_prompt("a " * 9)
    seen = set()
    for key in itertools.product(*(range(k) for k in S.SUMMARY_FACTOR_SIZES)):  # all 189 summaries
        text = S.summary_text(*key)
        parsed = S.parse_summary(text)
        assert tuple(parsed[k] for k in S.SUMMARY_FACTOR_NAMES) == key
        ids = S.encode_summary(text)
        assert ids.shape == (S.SUMMARY_LEN,) and S.decode_summary(ids) == text
        seen.add(text)
    assert len(seen) == 189
    assert S.parse_summary("<bos> RED  heart ,top left <eos>") == {
        "colour": 0,
        "shape": 2,
        "region_x": 0,
        "region_y": 0,
    }
    for bad in ("red heart top left", "red heart, middle", "heart red, top", ""):
        with pytest.raises(InvalidDataError) as info:
            S.parse_summary(bad)
        _one_line(info)


# --- the model ----------------------------------------------------------------------------------------


def tiny(**kw) -> genlab.GenerativeModel:
    torch.manual_seed(0)
    return genlab.build_model("summarizer", TRIPLES, **{**TINY, **kw}).double().eval()


def test_log_prob_sums_to_one_over_every_summary():
    model = tiny()
    with torch.no_grad():
        for p in model.parameters():  # away from the near-uniform initialisation
            p.add_(0.3 * torch.randn_like(p))
    summaries = torch.tensor(list(itertools.product(range(5), repeat=3)))  # all 125
    image = torch.randint(0, 2, (1, 3, 8, 8)).double().expand(len(summaries), -1, -1, -1)
    text = torch.randint(0, 5, (1, 5)).expand(len(summaries), -1)
    batch = {"x": image, "text": text, "summary": summaries}
    with torch.no_grad():
        fused = model.log_prob(batch)
        for given in (["x", "text"], ["x"], ["text"]):
            lp = model.log_prob(batch, given=given)
            assert math.isclose(float(torch.logsumexp(lp, 0)), 0.0, abs_tol=1e-9), given
        # each input matters, and "absent" is what summarize() feeds: the empty caption, no-image vectors
        assert not torch.allclose(fused, model.log_prob(batch, given=["x"]))
        assert not torch.allclose(fused, model.log_prob(batch, given=["text"]))
        alone = model.log_prob({"x": image, "summary": summaries}, given=["x"])
        assert torch.equal(alone, model.log_prob(batch, given=["x"]))
    with pytest.raises(ValueError, match="given=") as info:
        model.log_prob({"x": image, "summary": summaries}, given=["x", "text"])
    _one_line(info)


def test_summary_outputs_never_see_later_summary_tokens_but_see_caption_and_image():
    model = tiny()
    text, summary = torch.randint(0, 5, (2, 5)), torch.randint(0, 5, (2, 3))
    image = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    emb = model.tok_emb(torch.cat([text, summary], 1)).detach().requires_grad_(True)  # (B, T + S, d)
    original = model.tok_emb.forward
    model.tok_emb.forward = lambda ids: emb[:, : ids.shape[1]]  # gradients with respect to each input embedding
    try:
        logits = model.summary_logits(text, summary, model.condition_vectors(image))  # (B, S, V)
        for j in range(3):
            g_emb, g_img = torch.autograd.grad(logits[:, j].sum(), [emb, image], retain_graph=True)
            # summary position j reads the caption and summary tokens < j (its input is token T + j - 1)
            assert torch.equal(g_emb[:, 5 + j :], torch.zeros_like(g_emb[:, 5 + j :])), j
            assert g_emb[:, 4 + j].abs().sum() > 0 and g_emb[:, :4].abs().sum() > 0  # caption reaches all
            assert g_img.abs().sum() > 0
    finally:
        model.tok_emb.forward = original


def test_modality_dropout_and_summarize():
    model = tiny(p_drop_image=0.5, p_drop_text=0.5)
    g = torch.Generator().manual_seed(0)
    batch = {
        "x": torch.randint(0, 2, (64, 3, 8, 8), generator=g).double(),
        "text": torch.randint(0, 5, (64, 5), generator=g),
        "summary": torch.randint(0, 5, (64, 3), generator=g),
    }
    nll = -model.log_prob(batch).mean() / 3
    assert torch.allclose(model.loss(batch)["loss"], nll)  # eval: nothing dropped, the exact NLL per token
    model.train()
    dropped = [model.loss(batch)["loss"] for _ in range(2)]
    assert not torch.allclose(dropped[0], dropped[1])  # train: a fresh dropout draw each call
    model.eval()
    ids = model.summarize(batch["x"][:4], batch["text"][:4], n=2)
    assert ids.shape == (8, 3) and torch.equal(ids[::2], ids[1::2])  # greedy: the same twice
    assert torch.equal(
        ids, model.translate({"x": batch["x"][:4], "text": batch["text"][:4]}, n=2, mean=True)["summary"]
    )
    assert torch.equal(
        model.summarize(None, batch["text"][:4]), model.translate({"text": batch["text"][:4]}, mean=True)["summary"]
    )
    drawn = model.summarize(batch["x"][:4], None, n=3, mean=False, generator=torch.Generator().manual_seed(1))
    assert drawn.shape == (12, 3) and drawn.min() >= 0 and drawn.max() < 5
    with pytest.raises(ValueError, match="neither"):
        model.summarize(None, None)
    with pytest.raises(ValueError, match="summary only") as info:
        model.translate({"x": batch["x"][:2]}, ["text"])
    _one_line(info)
    with pytest.raises(ValueError, match="'pairs'") as info:
        genlab.build_model("summarizer", SPECS["pairs"], **TINY)
    _one_line(info)


# --- brief training on shapes-summary: the test, and the command line --------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A summarizer trained briefly (fixed seed, 16x16 images, 400 steps of 64) and its test split."""
    run = tmp_path_factory.mktemp("summarize") / "run"
    train = genlab.load_dataset("shapes-summary", "train", n=2000, size=16)
    test = genlab.load_dataset("shapes-summary", "test", n=300, size=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = genlab.build_model("summarizer", train.spec, d_model=32, n_layers=2, n_heads=2, channels=8, hidden=32)
        cfg = TrainConfig(steps=400, batch_size=64, lr=3e-3, progress=False, eval_every=0, sample_every=0, seed=0)
        genlab.Trainer(model, train, None, cfg, out_dir=run).fit()
    return model.eval(), test, run


def test_fused_summaries_beat_the_text_only_baseline_on_facts_absent_from_the_text(trained):
    model, test, _ = trained
    report = summarization_report(model, test, n_examples=300, seed=0)
    fused, text_only, image_only = (report["conditions"][k] for k in ("fused", "text_only", "image_only"))
    # the text-only baseline can only guess what the text lacks (chance: 1/7, 1/3, 1/9) ...
    assert text_only["absent_from_text"] < 0.35, text_only
    # ... the fused summary reads it from the image
    assert fused["absent_from_text"] > text_only["absent_from_text"] + 0.2, (fused, text_only)
    assert report["gain_absent_from_text"] == pytest.approx(fused["absent_from_text"] - text_only["absent_from_text"])
    assert fused["parse_rate"] > 0.9 and image_only["position"]["image_only"] is not None
    assert sum(report["counts"]["colour"].values()) == 300
    best = max(text_only["all_correct"], image_only["all_correct"])
    assert report["fusion_gain"] == pytest.approx(fused["all_correct"] - best)


def test_evaluate_reports_the_summary_metric(trained):
    model, test, _ = trained
    from genlab.evaluate import applicable_metrics

    assert applicable_metrics(model) == ["likelihood", "summary"]
    res = genlab.evaluate(model, test, n_samples=40)
    assert res["summary/n_examples"] == 40 and "summary/conditions/fused/colour/text_only" in res
    assert 0 < res["log_prob_bpd"] < math.log2(len(S.SUMMARY_VOCAB))  # bits per summary token


def test_summarize_cli(trained, tmp_path, capsys):
    model, test, run = trained
    img = tmp_path / "shape.png"
    Image.fromarray((test.tensors["x"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(img)
    text = S.decode_summary(test.tensors["text"][0])
    assert main(["summarize", str(run), "--image", str(img), "--text", text]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and "greedy" in lines[1] and str(img) in lines[1]
    S.parse_summary(lines[0])  # a summary
    assert main(["summarize", str(run), "--text", "a small ___ shape in the top left", "--n", "3", "--sample"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and "image modality is dropped" in lines[-1]
    assert main(["summarize", str(run), "--image", str(img)]) == 0
    assert "caption modality is dropped" in capsys.readouterr().out
    for argv, expected in (
        ([], "--image FILE, --text"),
        (["--text", "a small purple heart"], "'purple' is not in the vocabulary"),
        (["--image", str(tmp_path / "missing.png")], "missing.png"),
        (["--text", "a small red heart", "--temperature", "0.5"], "add --sample"),
    ):
        assert main(["summarize", str(run), *argv]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, err
    assert main(["translate", str(run), "--text", text]) == 2  # summaries are written by summarize
    assert "use 'genlab summarize" in capsys.readouterr().err
    # a run of another family writes no summaries
    cap = tmp_path / "captioner"
    data = genlab.load_dataset("shapes-captions", "train", n=32, size=16)
    cfg = TrainConfig(steps=1, batch_size=16, progress=False, eval_every=0, sample_every=0)
    genlab.Trainer(genlab.build_model("captioner", data.spec, **TINY), data, None, cfg, out_dir=cap).fit()
    assert main(["summarize", str(cap), "--image", str(img)]) == 2
    err = capsys.readouterr().err.strip()
    assert "'captioner'" in err and "summarizer" in err and "\n" not in err
