"""The frozen-LM captioner (Tsimpoukelli et al. 2021): the LM stays bit-identical and out of the state
dict, log p(text | x) is an exact distribution over captions, a trained prefix lowers the caption
NLL, run folders round-trip, prompting respects the LM's limits, and a bad lm_run is one line."""

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
from genlab.data import TensorDataset
from genlab.data import shapes as S
from genlab.models.frozen import answer, caption_coherence, interleave
from genlab.train import TrainConfig

PAIRS = SPECS["pairs"]  # image [3, 8, 8] + caption of 5 tokens over a vocabulary of 5
QUIET = dict(progress=False, eval_every=0, sample_every=0, checkpoint_every=0, log_every=1000)
TINY_LM = dict(source="text", d_model=16, n_layers=1, n_heads=2, max_prefix=40)
TINY_FROZEN = dict(prefix_len=2, channels=4, hidden=16)


def fit(model, data, out, steps, batch_size=32, lr=3e-3, val=None):
    genlab.Trainer(model, data, val, TrainConfig(steps=steps, batch_size=batch_size, lr=lr, **QUIET), out).fit()
    return out


def pairs_data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n, *PAIRS.modality("x").shape), generator=g).float()
    text = torch.randint(0, 5, (n, 5), generator=g)
    return TensorDataset({"x": x, "text": text, "y": torch.arange(n) % 3}, PAIRS)


@pytest.fixture(scope="module")
def pairs_lm(tmp_path_factory):
    """A 'transformer' run on the captions of the tiny pairs spec (2 steps: any weights will do)."""
    torch.manual_seed(0)
    lm = genlab.build_model("transformer", PAIRS, **TINY_LM)
    return fit(lm, pairs_data(), tmp_path_factory.mktemp("runs") / "lm", 2)


@pytest.fixture(scope="module")
def captions():
    return genlab.load_dataset("shapes-captions", "train", n=3000, size=8), genlab.load_dataset(
        "shapes-captions", "val", n=200, size=8
    )


@pytest.fixture(scope="module")
def caption_lm(tmp_path_factory, captions):
    """A transformer on shapes-captions' captions, pretrained to read context (see the module)."""
    torch.manual_seed(0)
    lm = genlab.build_model("transformer", captions[0].spec, **{**TINY_LM, "d_model": 32, "context_words": 8})
    return fit(lm, captions[0], tmp_path_factory.mktemp("runs") / "caption-lm", 300, batch_size=64)


def test_lm_stays_bit_identical_and_out_of_the_state_dict(pairs_lm, tmp_path):
    torch.manual_seed(0)
    model = genlab.build_model("frozen", PAIRS, lm_run=str(pairs_lm), **TINY_FROZEN)
    lm_before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    enc_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.encoder.parameters()}
    assert not any(p.requires_grad for p in model.lm.parameters())
    fit(model, pairs_data(), tmp_path / "run", 5, batch_size=8, lr=1e-2)
    assert all(torch.equal(v, lm_before[k]) for k, v in model.lm.state_dict().items())
    assert any(not torch.equal(v, enc_before[k]) for k, v in model.encoder.state_dict().items())
    model.train()
    assert not model.lm.training  # dropout of the frozen LM stays off
    keys = set(model.state_dict())
    assert keys == {f"encoder.{k}" for k in model.encoder.state_dict()} | {"lm_fingerprint"}
    model.double()  # dtype and device moves carry the LM along
    assert model.lm.tok_emb.weight.dtype == torch.float64


def test_log_prob_is_a_distribution_over_every_caption(pairs_lm):
    torch.manual_seed(0)
    model = genlab.build_model("frozen", PAIRS, lm_run=str(pairs_lm), **TINY_FROZEN).double().eval()
    with torch.no_grad():
        model.encoder[-1].weight.mul_(50)  # a prefix far from zero: the check must not pass by accident
    x = pairs_data(2).tensors["x"].double()
    every = torch.tensor(list(itertools.product(range(5), repeat=5)))  # all 5^5 captions
    for i in range(2):
        img = x[i : i + 1].expand(len(every), -1, -1, -1)
        lp = model.log_prob({"x": img, "text": every}, given=["x"])
        assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-9)
        assert torch.equal(lp, model.lm.log_prob(every, prefix_embeds=model.prefix(img)))
    assert not torch.allclose(lp, model.lm.log_prob(every))  # the image changes p(text)
    # answer() reads [f(x), <start>, prompt] as translate() does: it continues a greedy caption exactly
    greedy = model.translate({"x": x}, mean=True)["text"]  # (2, 5)
    assert torch.equal(answer(model, x, greedy[:, :2], max_new_tokens=3)[0], greedy[:, 2:])
    with pytest.raises(ValueError, match="given=\\['x'\\]"):
        model.log_prob({"text": every})
    with pytest.raises(NotImplementedError, match="translate"):
        model.sample(2)


def test_trained_prefix_lowers_the_caption_nll(caption_lm, captions):
    train, val = captions
    torch.manual_seed(0)
    model = genlab.build_model("frozen", train.spec, lm_run=str(caption_lm), prefix_len=4, channels=8, hidden=64)
    genlab.Trainer(model, train, None, TrainConfig(steps=150, batch_size=64, lr=3e-3, **QUIET)).fit()
    model.eval()
    x, text = val.tensors["x"], val.tensors["text"]
    with torch.no_grad():
        with_prefix = -model.log_prob({"x": x, "text": text}).mean().item()
        lm_alone = -model.lm.log_prob(text).mean().item()
    assert with_prefix < lm_alone - 0.5, (with_prefix, lm_alone)  # nats per caption
    # translations: example-major, greedy decoding is deterministic, captions parse
    caps = model.translate({"x": x[:3]}, ["text"], n=2, generator=torch.Generator().manual_seed(0))["text"]
    assert caps.shape == (6, S.TEXT_LEN) and caps.dtype == torch.long
    greedy = model.translate({"x": x[:3]}, n=2, mean=True)["text"]
    assert torch.equal(greedy[0::2], greedy[1::2])
    res = caption_coherence(model, val, n_examples=50)
    assert res["n"] == 50 and 0 <= res["coherence"] <= 1 and set(res["per_factor"]) == set(S.CAPTION_FACTOR_NAMES)
    # zero- and few-shot prompts: the continuation of "a <scale>" is one word; the prompt's length is checked
    ids, words = answer(model, x[:4], "a small")
    assert ids.shape == (4, 1) and len(words) == 4
    shots = [(x[10], S.decode_caption(text[10])), (x[11:15], text[11:15])]
    assert interleave(model, shots, x[:4]).shape == (4, 2 * (4 + 1 + S.TEXT_LEN) + 4, model.d_model)
    ids, _ = answer(model, x[:4], "a", shots=shots, max_new_tokens=3)
    assert ids.shape == (4, 3)
    with pytest.raises(ValueError, match="max_prefix=40"):
        interleave(model, shots + shots[:1], x[:4])
    with pytest.raises(ValueError, match="must fit the LM's 10 tokens"):
        answer(model, x[:1], "a small red", max_new_tokens=7)
    with pytest.raises(ValueError, match="'purple' is not in the vocabulary"):
        answer(model, x[:1], "a purple")


def test_run_folder_round_trip_keeps_lm_run_absolute(pairs_lm, tmp_path, monkeypatch):
    monkeypatch.chdir(pairs_lm.parent)
    torch.manual_seed(0)
    model = genlab.build_model("frozen", PAIRS, lm_run=pairs_lm.name, **TINY_FROZEN)  # a relative path
    data = pairs_data()
    fit(model, data, tmp_path / "run", 3, batch_size=8, val=pairs_data(8, 1))
    monkeypatch.chdir(tmp_path)
    twin, config, spec = genlab.load_run(tmp_path / "run", weights="last")
    assert config["model_kwargs"]["lm_run"] == str(pairs_lm.resolve())
    batch = {"x": data.tensors["x"], "text": data.tensors["text"]}
    model.eval()
    assert torch.equal(twin.log_prob(batch), model.log_prob(batch))
    # weights trained through another LM than the one now in lm_run (it was retrained): one line
    twin.lm_fingerprint.add_(1)
    from genlab.checkpoint import save_tensors

    save_tensors(twin.state_dict(), tmp_path / "run" / "model.safetensors")
    with pytest.raises(Exception, match="other weights than the one this encoder was trained through"):
        genlab.load_run(tmp_path / "run", weights="last")


def test_bad_lm_run_is_one_line(pairs_lm, tmp_path):
    fit(genlab.build_model("vae", PAIRS, z_dim=2, hidden=[8], channels=4), pairs_data(), tmp_path / "vae", 1)
    other = genlab.DataSpec(
        name="other", kind="tokens", shape=(7,), dtype="int64", value_range=None, levels=6, vocab=tuple("<>abcd")
    )
    tokens = TensorDataset({"x": torch.randint(0, 6, (16, 7))}, other)
    fit(genlab.build_model("transformer", other, d_model=8, n_layers=1, n_heads=2), tokens, tmp_path / "tok", 1)
    cases = [
        ("", "frozen needs lm_run=RUN"),
        (str(tmp_path / "nope"), "does not exist"),
        (str(tmp_path), "is not a genlab run folder"),
        (str(tmp_path / "vae"), "is a 'vae' run; frozen needs a 'transformer'"),
        (str(tmp_path / "tok"), "models 6 tokens x 7; the captions of 'pairs' have 5 x 5"),
    ]
    for lm_run, needle in cases:
        with pytest.raises(ValueError, match=needle) as info:
            genlab.build_model("frozen", PAIRS, lm_run=lm_run)
        assert "\n" not in str(info.value)
    for kwargs, needle in [
        (dict(prefix_len=41), "prefix_len=41 exceeds the LM's max_prefix=40"),
        (dict(conditional=True), "not class-conditional"),
    ]:
        with pytest.raises(ValueError, match=needle):
            genlab.build_model("frozen", PAIRS, lm_run=str(pairs_lm), **kwargs)
    with pytest.raises(ValueError, match="has kind 'image'"):
        genlab.build_model("frozen", SPECS["rgb16"], lm_run=str(pairs_lm))


def test_cli_translate_writes_captions(caption_lm, captions, tmp_path, capsys):
    train, _ = captions
    torch.manual_seed(0)
    model = genlab.build_model("frozen", train.spec, lm_run=str(caption_lm), **TINY_FROZEN)
    fit(model, train, tmp_path / "run", 2)
    img = tmp_path / "shape.png"
    Image.fromarray((train.tensors["x"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(img)
    out = tmp_path / "captions.txt"
    argv = ["translate", str(tmp_path / "run"), "--image", str(img), "--n", "3", "--out", str(out)]
    assert main(argv) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 3 and all(w in S.CAPTION_VOCAB for line in lines for w in line.split())
    capsys.readouterr()
    assert (
        main(["translate", str(tmp_path / "run"), "--text", "a small red heart", "--out", str(tmp_path / "t.png")]) == 2
    )
    err = capsys.readouterr().err
    assert "produces text only, not x; give --image" in err and "\n" not in err.strip()
    ev = genlab.evaluate(model, captions[1], metrics=["likelihood"])
    tokens = captions[1].tensors["text"].shape[1]
    assert math.isclose(ev["log_prob_bpd"], -ev["log_prob_nats"] / (tokens * math.log(2)), rel_tol=1e-9)  # bits/token
    assert main(["sample", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "cannot sample" in err and "genlab translate" in err and "\n" not in err.strip()
    from genlab.evaluate import applicable_metrics
    from genlab.viz import run_figures

    names = [p.name for p in run_figures(model, captions[1], tmp_path / "figures")]
    assert names == ["captioning.png"]  # no joint samples, no caption -> image translations
    assert applicable_metrics(model) == ["likelihood"]  # coherence and modalities need a joint model


def test_context_words_is_a_training_objective_only(captions):
    """context_words > 0 changes the training loss (a prefix of the caption's own words), never the
    model: validation loss and log_prob are the plain LM's; bad values are refused in one line."""
    spec = captions[0].spec
    batch = {"text": captions[0].tensors["text"][:16]}
    torch.manual_seed(0)
    plain = genlab.build_model("transformer", spec, **TINY_LM)
    ctx = genlab.build_model("transformer", spec, **TINY_LM, context_words=4)
    ctx.load_state_dict(plain.state_dict())
    plain.eval(), ctx.eval()
    assert torch.equal(ctx.loss(batch)["loss"], plain.loss(batch)["loss"])
    assert torch.equal(ctx.log_prob(batch["text"]), plain.log_prob(batch["text"]))
    ctx.train()
    losses = set()
    for seed in range(6):  # k ~ U{0..4}: some draws put words in front, and those change the loss
        torch.manual_seed(seed)
        losses.add(round(ctx.loss(batch)["loss"].item(), 6))
    assert len(losses) > 1
    with pytest.raises(ValueError, match="context_words must be an integer 0..max_prefix"):
        genlab.build_model("transformer", spec, **{**TINY_LM, "max_prefix": 2}, context_words=3)
