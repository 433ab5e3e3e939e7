"""The representation-conditioned captioner (issue 12, part 2): exact log p(text | image) that sums
to one over every caption, causality with the condition in every layer, brief training lowers the
caption NLL below an image-blind model's, and captions through ``genlab translate``."""

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
from genlab.train import TrainConfig

PAIRS = SPECS["pairs"]  # image [3, 8, 8] + caption of 5 tokens over a vocabulary of 5
TINY = dict(d_model=16, n_layers=2, n_heads=2, channels=4, hidden=16)


def tiny(**kw):
    torch.manual_seed(0)
    return genlab.build_model("captioner", PAIRS, **{**TINY, **kw}).double().eval()


def test_log_prob_sums_to_one_over_every_caption():
    model = tiny()
    with torch.no_grad():
        for p in model.parameters():  # away from the near-uniform initialisation
            p.add_(0.3 * torch.randn_like(p))
    image = torch.randint(0, 2, (1, 3, 8, 8)).double()
    captions = torch.tensor(list(itertools.product(range(5), repeat=5)))  # all 3,125
    with torch.no_grad():
        lp = model.log_prob({"x": image.expand(len(captions), -1, -1, -1), "text": captions})
    assert math.isclose(float(torch.logsumexp(lp, 0)), 0.0, abs_tol=1e-9)


def test_outputs_never_see_later_tokens_but_do_see_the_image():
    model = tiny()
    text = torch.randint(0, 5, (2, 5))
    image = torch.rand(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    emb = model.tok_emb(text).detach().requires_grad_(True)
    original = model.tok_emb.forward
    model.tok_emb.forward = lambda ids: emb[:, : ids.shape[1]]  # gradients with respect to each input embedding
    try:
        logits = model.logits(text, model.condition_vectors(image))  # (B, T, V)
        for t in range(5):
            g_emb, g_img = torch.autograd.grad(logits[:, t].sum(), [emb, image], retain_graph=True, allow_unused=True)
            # position t reads tokens < t (its input is token t-1): inputs t .. T-1 get exactly zero
            assert torch.equal(g_emb[:, t:], torch.zeros_like(g_emb[:, t:])), t
            if t > 0:
                assert g_emb[:, t - 1].abs().sum() > 0
            assert g_img.abs().sum() > 0  # the condition reaches every position, the first included
    finally:
        model.tok_emb.forward = original


def captions_of_images(n=256, seed=0):
    """Each caption is token (colour + 2) at every position, where colour = which channel of the
    image is on: the image determines the caption, and without it the caption has 3 nats."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.randint(0, 3, (n,), generator=g)
    x = torch.zeros(n, 3, 8, 8)
    x[torch.arange(n), colour] = 1.0
    return TensorDataset({"x": x, "text": (colour + 2)[:, None].repeat(1, 5), "y": colour}, PAIRS)


def test_brief_training_reads_the_image(tmp_path):
    data = captions_of_images()
    torch.manual_seed(0)
    model = genlab.build_model("captioner", PAIRS, **TINY)
    cfg = TrainConfig(steps=150, batch_size=32, lr=3e-3, progress=False, eval_every=0, sample_every=0)
    genlab.Trainer(model, data, None, cfg, out_dir=tmp_path / "run").fit()
    model.eval()
    test = captions_of_images(64, seed=1)
    with torch.no_grad():
        nll = -model.log_prob({"x": test.tensors["x"], "text": test.tensors["text"]}).mean().item()
        caps = model.translate({"x": test.tensors["x"]}, n=2, mean=True)["text"]
    assert nll < 0.5 * math.log(3), nll  # an image-blind model needs log 3 nats per caption at best
    assert torch.equal(caps, test.tensors["text"].repeat_interleave(2, 0))
    loaded = genlab.load_run(tmp_path / "run").model
    with torch.no_grad():
        again = -loaded.log_prob({"x": test.tensors["x"], "text": test.tensors["text"]}).mean().item()
    assert math.isclose(again, nll, rel_tol=1e-6)


def test_translate_cli_and_errors(tmp_path, capsys):
    data = captions_of_images(64)
    model = genlab.build_model("captioner", PAIRS, **TINY)
    cfg = TrainConfig(steps=2, batch_size=16, progress=False, eval_every=0, sample_every=0)
    genlab.Trainer(model, data, None, cfg, out_dir=tmp_path / "run").fit()
    img = tmp_path / "shape.png"
    Image.fromarray((data.tensors["x"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(img)
    out = tmp_path / "captions.txt"
    assert main(["translate", str(tmp_path / "run"), "--image", str(img), "--n", "3", "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot sample" in err and "\n" not in err
    with pytest.raises(ValueError, match="translates images to captions only"):
        model.translate({"text": data.tensors["text"][:2]})
    with pytest.raises(ValueError, match="d_model divisible by n_heads"):
        genlab.build_model("captioner", PAIRS, d_model=10, n_heads=3)
