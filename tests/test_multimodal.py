"""Multimodal VAEs (genlab/models/multimodal.py): the mathematics of experts, the caption decoders
against the enumerated distribution of all sequences, every family on a tiny image + caption + audio
spec, a run-folder round trip, and a brief training on shapes-captions whose translations read back
the source's factors far above chance."""

import itertools
import json
import math

import pytest
import torch
from conftest import TINY
from torch import nn

import genlab
from genlab import DataSpec
from genlab.data.audio import mu_law_decode, mu_law_encode
from genlab.data.base import InvalidDataError, TensorDataset
from genlab.data.shapes import caption_factors, decode_caption, parse_caption
from genlab.distributions import diag_gaussian_log_prob
from genlab.metrics.likelihood import likelihood_metrics
from genlab.models.modality_nets import IndependentTokens, ModalityNet
from genlab.models.multimodal import (
    mixture_log_prob,
    nonempty_subsets,
    product_of_experts,
    sample_mixture,
)
from genlab.registry import model_kwargs
from genlab.train import TrainConfig, Trainer

MODELS = ["mvae", "mmvae", "mopoe", "mmvaeplus"]
TRI = DataSpec(
    name="tri",
    kind="multimodal",
    shape=(3, 8, 8),
    levels=2,
    vocab=tuple("<>abcd"),
    extra={"text_len": 5},
    modalities={
        "x": DataSpec(name="x", kind="image", shape=(3, 8, 8), levels=2),
        "text": DataSpec(name="text", kind="tokens", shape=(5,), dtype="int64", value_range=None, levels=6),
        "audio": DataSpec(
            name="audio", kind="audio", shape=(64,), value_range=(-1.0, 1.0), extra={"encoding": "mu-law-8bit"}
        ),
    },
)
KEYS = ("x", "text", "audio")
SUBSETS = nonempty_subsets(KEYS)


def tri_batch(n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randint(0, 2, (n, 3, 8, 8), generator=g).double(),
        "text": torch.randint(0, 6, (n, 5), generator=g),
        "audio": mu_law_decode(torch.randint(0, 256, (n, 64), generator=g), dtype=torch.float64),
    }


def tiny(name, **kw):
    return genlab.build_model(name, TRI, **{**TINY[name], **kw}).double()


# --- the mathematics of experts --------------------------------------------------------------------
def test_product_of_gaussian_experts_is_the_precision_weighted_closed_form():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(3, 4, 5, generator=g, dtype=torch.float64), torch.randn(3, 4, 5, generator=g).double()
    for prior in (True, False):
        m, lv = product_of_experts(mu, logvar, prior=prior)
        prec = (1 / logvar.exp()).sum(0) + (1.0 if prior else 0.0)
        assert torch.allclose(lv, -prec.log()) and torch.allclose(m, (mu / logvar.exp()).sum(0) / prec)
        # the product of the densities is proportional to the fused Gaussian: their log-ratio is constant in z
        z = torch.randn(6, 4, 5, generator=g, dtype=torch.float64)
        log_prod = diag_gaussian_log_prob(z[:, None], mu, logvar).sum(1)  # (6, 4)
        if prior:
            log_prod = log_prod + diag_gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
        ratio = log_prod - diag_gaussian_log_prob(z, m, lv)
        assert torch.allclose(ratio, ratio[:1].expand_as(ratio))
    # one expert without the prior is itself; with it, the posterior of a Gaussian observation
    m, lv = product_of_experts(mu[:1], logvar[:1], prior=False)
    assert torch.allclose(m, mu[0]) and torch.allclose(lv, logvar[0])


def test_mixture_sampling_picks_each_expert_equally_often():
    mu = torch.tensor([0.0, 10.0, 20.0], dtype=torch.float64).view(3, 1, 1)  # 3 experts, B = 1, Z = 1
    logvar = torch.full_like(mu, -4.0)
    z = sample_mixture(mu, logvar, 30000, torch.Generator().manual_seed(0))  # (30000, 1, 1)
    counts = torch.bincount((z.view(-1) / 10).round().long(), minlength=3).double()
    chi2 = float(((counts - 10000) ** 2 / 10000).sum())
    assert counts.sum() == 30000 and chi2 < 13.8, counts  # chi-square, 2 dof, p = 0.001
    # the mixture density is the mean of the component densities
    pts = torch.tensor([0.1, 9.8, 15.0], dtype=torch.float64).view(3, 1, 1)
    direct = torch.stack([diag_gaussian_log_prob(pts, mu[c], logvar[c]) for c in range(3)]).exp().mean(0).log()
    assert torch.allclose(mixture_log_prob(pts, mu, logvar), direct)


def test_mopoe_mixes_the_products_of_all_seven_subsets_of_three_modalities():
    assert len(SUBSETS) == 7 == len(set(SUBSETS)) and all(SUBSETS)
    assert SUBSETS[:3] == [("x",), ("text",), ("audio",)] and SUBSETS[-1] == KEYS
    model = tiny("mopoe").eval()
    ex = model.experts(tri_batch())
    mu, logvar = model.fuse(ex, KEYS)
    assert mu.shape == (7, 5, 2)
    for i, key in enumerate(KEYS):  # the singletons' products are the experts themselves
        assert torch.allclose(mu[i], ex[key][0]) and torch.allclose(logvar[i], ex[key][1])
    two = product_of_experts(
        torch.stack([ex["x"][0], ex["audio"][0]]), torch.stack([ex["x"][1], ex["audio"][1]]), False
    )
    assert torch.allclose(mu[SUBSETS.index(("x", "audio"))], two[0])


def test_iwae_bound_does_not_decrease_with_k():
    torch.manual_seed(0)
    model = tiny("mmvae").eval()
    batch = tri_batch(8)
    with torch.no_grad():
        for net in model.nets.values():  # posteriors away from the prior: gaps of several standard errors
            net.head.bias[: model.z_dim] += 2.0
        means = [float(torch.stack([model.log_prob(batch, k=k) for _ in range(8)]).mean()) for k in (1, 8, 64)]
    assert means[0] <= means[1] <= means[2], means


@pytest.mark.parametrize("name", MODELS)
def test_bounds_on_a_model_whose_likelihood_is_known(name):
    """Decoders whose last layer ignores the latents make p(x_S) = prod_m p(x_m) exact and known: the
    joint bound lies below it, closer with more importance samples, and the conditional is exact."""
    torch.manual_seed(0)
    model = tiny(name).eval()
    with torch.no_grad():
        for net in model.nets.values():
            [m for m in net.dec.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1].weight.zero_()
            lat = model.z_dim + model.w_dim  # posteriors away from the prior: a clear gap at k = 1
            net.head.bias[:lat] += 1.0
            net.head.bias[lat:] -= 2.0
        batch = tri_batch(8)
        lat = torch.zeros(1, 8, model.z_dim, dtype=torch.float64)
        w = torch.zeros(1, 8, model.w_dim, dtype=torch.float64) if model.w_dim else None
        exact = {k: model._log_lik(k, lat, w, model.nets[k].target(v))[0] for k, v in batch.items()}
        for s in [("x",), ("text", "audio"), KEYS]:
            x, truth = {k: batch[k] for k in s}, sum(exact[k] for k in s)
            b1, b32 = (torch.stack([model.log_prob(x, k=k) for _ in range(16)]).mean(0) for k in (1, 32))
            assert float((b1 - truth).mean()) < float((b32 - truth).mean()) <= 1e-3, (s, b1 - truth, b32 - truth)
            if len(s) > 1:
                assert torch.allclose(model.log_prob(x, given=s[:1], k=4), truth - exact[s[0]])


def test_dreg_changes_only_the_encoder_gradients():
    """DReG reweights the encoders' path gradient; the decoders get IWAE's gradient exactly."""
    plain, dreg = tiny("mmvae", k=4, dreg=False), tiny("mmvae", k=4, dreg=True)
    dreg.load_state_dict(plain.state_dict())
    grads = []
    for model in (plain, dreg):
        torch.manual_seed(5)
        model.loss(tri_batch())["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    dec = [n for n in grads[0] if ".dec." in n]
    enc = [n for n in grads[0] if ".dec." not in n]
    assert dec and all(torch.allclose(grads[0][n], grads[1][n]) for n in dec)
    assert any(not torch.allclose(grads[0][n], grads[1][n]) for n in enc)


# --- the caption decoders, against all 27 sequences of 3 tokens over a vocabulary of 3 ---------------
DECODERS = ["gru", "independent"]
WORDS = DataSpec(name="words", kind="tokens", shape=(3,), dtype="int64", value_range=None, levels=3)
SEQS = torch.tensor(list(itertools.product(range(3), repeat=3)))  # (27, 3), lexicographic: id = 9 t1 + 3 t2 + t3


def word_net(decoder):
    torch.manual_seed(0)
    net = ModalityNet(WORDS, latent=2, hidden=8, channels=4, act="relu", text_decoder=decoder).double()
    with torch.no_grad():  # doubled weights: peakier distributions whose positions depend clearly on each other
        for p in net.dec.parameters():
            p.mul_(2.0)
    return net


def sequence_probs(net, lat):
    """[B, 3, 3, 3] exp(log_lik) of every sequence at each latent [B, 2]."""
    with torch.no_grad():
        lp = net.log_lik(lat.repeat_interleave(27, 0), SEQS.repeat(len(lat), 1))
    return lp.exp().view(len(lat), 3, 3, 3)


@pytest.mark.parametrize("decoder", DECODERS)
def test_caption_decoder_is_a_distribution_over_whole_sequences(decoder):
    lat = 2 * torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    p = sequence_probs(word_net(decoder), lat)
    assert torch.allclose(p.sum((1, 2, 3)), torch.ones(4, dtype=torch.float64))
    # the independent decoder is the product of its marginals; the GRU's positions depend on each other
    product = p.sum((2, 3))[:, :, None, None] * p.sum((1, 3))[:, None, :, None] * p.sum((1, 2))[:, None, None, :]
    assert torch.allclose(p, product) == (decoder == "independent")


@pytest.mark.parametrize("decoder", DECODERS)
def test_ancestral_samples_follow_the_sequence_probabilities(decoder):
    net, n = word_net(decoder), 6000
    lat = torch.tensor([[0.5, -0.5]], dtype=torch.float64)
    expected = n * sequence_probs(net, lat).flatten()  # (27,)
    ids = net.draw(lat.expand(n, -1), torch.Generator().manual_seed(0), mean=False)  # (n, 3)
    counts = torch.bincount(ids @ torch.tensor([9, 3, 1]), minlength=27).double()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert expected.min() > 5 and chi2 < 54.05, (chi2, counts, expected)  # chi-square, 26 dof, p = 0.001


@pytest.mark.parametrize("decoder", DECODERS)
def test_greedy_decoding_takes_the_most_likely_next_token_at_each_step(decoder):
    lat = 2 * torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    net, rows = word_net(decoder), torch.arange(6)
    p = sequence_probs(net, lat)  # (6, 3, 3, 3)
    # by hand: t_i = argmax_v p(t_<i, t_i = v), the joint summed over the later positions
    t1 = p.sum((2, 3)).argmax(-1)
    t2 = p[rows, t1].sum(-1).argmax(-1)
    t3 = p[rows, t1, t2].argmax(-1)
    with torch.no_grad():
        greedy = net.draw(lat, torch.Generator().manual_seed(3), mean=True)
    assert torch.equal(greedy, torch.stack([t1, t2, t3], 1))
    if decoder == "independent":  # then greedy is the most likely sequence (the GRU's need not be)
        assert torch.equal(greedy @ torch.tensor([9, 3, 1]), p.flatten(1).argmax(1))


def test_text_decoder_is_an_option_of_every_family():
    for name in MODELS:
        assert model_kwargs(name)["text_decoder"].default == "gru"
        assert isinstance(tiny(name, text_decoder="independent").nets["text"].dec, IndependentTokens)
        with pytest.raises(ValueError, match="text_decoder 'lstm'; expected one of gru, independent"):
            tiny(name, text_decoder="lstm")


def test_stratified_mopoe_scores_each_example_under_one_subset_in_turn(monkeypatch):
    """stratified=True gives example i the ELBO of subset (i + offset) mod 7, each of the 7 subsets of 3
    modalities the same number of examples: an unbiased estimate of the mean over subsets."""
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # z = the mean: deterministic ELBOs
    full, strat = tiny("mopoe", stratified=False), tiny("mopoe")
    strat.load_state_dict(full.state_dict())
    batch = tri_batch(n=14)
    ex = full.experts(batch)
    y = {k: full.nets[k].target(v) for k, v in batch.items()}
    mu, logvar = full.fuse(ex, KEYS)
    per_subset = torch.stack([full._elbo(m, lv, y, KEYS) for m, lv in zip(mu, logvar)])  # (7, 14)
    torch.testing.assert_close(full.objective(ex, y), per_subset.mean(0))
    for offset in range(7):
        monkeypatch.setattr(torch, "randint", lambda high, size, o=offset, **kw: torch.tensor(o))
        pick = (torch.arange(14) + offset) % 7
        torch.testing.assert_close(strat.objective(ex, y), per_subset[pick, torch.arange(14)])
    assert model_kwargs("mopoe")["stratified"].default is True


@pytest.mark.parametrize("name", MODELS)
def test_likelihood_rescaling_weights_the_objective_and_not_the_bound(name):
    """rescale=True weights each modality's log-likelihood by max_m D_m / D_m in the training objective
    (image 192 values, caption 5, audio 64 here); log_prob, the bound, is the same with and without."""
    one_draw = {"k": 1} if name in ("mmvae", "mmvaeplus") else {}  # k = 1: no logsumexp over draws
    plain, scaled = (tiny(name, rescale=r, **one_draw) for r in (False, True))
    scaled.load_state_dict(plain.state_dict())
    assert plain.lik_weight == {"x": 1.0, "text": 1.0, "audio": 1.0}
    assert scaled.lik_weight == {"x": 1.0, "text": 192 / 5, "audio": 3.0}
    batch = tri_batch()
    for m in (plain, scaled):
        m.eval()
    bounds = []
    for m in (plain, scaled):
        torch.manual_seed(3)
        bounds.append(m.log_prob(batch))
    assert torch.equal(*bounds)
    # With the same draws the objective (k = 1: a sum of single-draw terms) is affine in the weights.
    objective = []
    for wt, wa in ((1.0, 1.0), (3.0, 2.0), (5.0, 3.0)):
        scaled.lik_weight.update(text=wt, audio=wa)
        torch.manual_seed(4)
        objective.append(
            scaled.objective(scaled.experts(batch), {k: scaled.nets[k].target(v) for k, v in batch.items()})
        )
    assert not torch.allclose(objective[0], objective[1])
    torch.testing.assert_close(objective[2] - objective[1], objective[1] - objective[0])


# --- every family on image + caption + audio --------------------------------------------------------
@pytest.mark.parametrize("text_decoder", DECODERS)
@pytest.mark.parametrize("name", MODELS)
def test_every_family_trains_scores_samples_encodes_and_translates(name, text_decoder):
    model = tiny(name, text_decoder=text_decoder)
    assert model.capabilities.modalities == KEYS and model.likelihood == "bound"
    batch = tri_batch()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    loss = model.loss({**batch, "y": torch.zeros(5, dtype=torch.long)})["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, [p for _, p in params], allow_unused=True)
    dead = [n for (n, _), g in zip(params, grads) if g is None or not bool(g.abs().sum() > 0)]
    assert not dead, dead

    model.eval()
    for s in SUBSETS:
        x = {k: batch[k] for k in s}
        lp = model.log_prob(x)
        assert lp.shape == (5,) and lp.dtype == torch.float64 and torch.isfinite(lp).all(), s
        assert model.encode(x).shape == (5, 2), s
        if len(s) > 1:  # conditional: given the first modality of the subset, score the others
            c = model.log_prob(x, given=s[:1], k=3)
            assert c.shape == (5,) and torch.isfinite(c).all(), s

    sample = model.sample(7, generator=torch.Generator().manual_seed(1))
    assert set(sample) == set(KEYS)
    assert sample["x"].shape == (7, 3, 8, 8) and set(sample["x"].unique().tolist()) <= {0.0, 1.0}
    assert sample["text"].shape == (7, 5) and sample["text"].dtype == torch.long
    assert 0 <= sample["text"].min() and sample["text"].max() < 6
    a = sample["audio"]
    assert a.shape == (7, 64) and a.abs().max() <= 1 and torch.equal(mu_law_decode(mu_law_encode(a), dtype=a.dtype), a)

    gen = torch.Generator().manual_seed(2)
    out = model.translate({"text": batch["text"]}, n=3, generator=gen)
    assert set(out) == {"x", "audio"} and out["x"].shape == (15, 3, 8, 8) and out["audio"].shape == (15, 64)
    out = model.translate({"x": batch["x"], "audio": batch["audio"]}, ["text", "x"], mean=True)
    assert out["text"].shape == (5, 5) and out["x"].shape == (5, 3, 8, 8) and out["x"].min() >= 0

    with pytest.raises(ValueError, match="non-empty subset"):
        model.log_prob({})
    with pytest.raises(ValueError, match="some but not all"):
        model.log_prob({"x": batch["x"]}, given=["x"])
    with pytest.raises(ValueError, match="targets must be modalities"):
        model.translate({"x": batch["x"]}, ["image"])


@pytest.mark.parametrize("name", MODELS)
def test_round_trip_through_a_run_folder(name, tmp_path):
    data = TensorDataset({k: v.float() if v.is_floating_point() else v for k, v in tri_batch(16).items()}, TRI)
    val = TensorDataset({k: v.float() if v.is_floating_point() else v for k, v in tri_batch(8, 1).items()}, TRI)
    model = genlab.build_model(name, TRI, **TINY[name])
    cfg = TrainConfig(steps=3, batch_size=8, progress=False, eval_every=0, sample_every=0, checkpoint_every=0)
    Trainer(model, data, val, cfg, out_dir=tmp_path / "run").fit()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    val_rec = [r for r in records if r["split"] == "val"]
    assert val_rec and all(math.isfinite(r["val_nll"]) and r["val_bpd"] > 0 for r in val_rec)  # the joint bound
    twin, cfg_dict, spec = genlab.load_run(tmp_path / "run", weights="last")
    assert type(twin) is type(model) and spec == TRI and cfg_dict["model"] == name
    model.eval()
    for s in [("x",), ("text", "audio"), KEYS]:
        x = {k: val.tensors[k] for k in s}
        torch.manual_seed(3)
        a = model.log_prob(x)
        torch.manual_seed(3)
        assert torch.equal(a, twin.log_prob(x)), s


def test_likelihood_metrics_score_all_modalities_jointly():
    model = tiny("mvae").eval()
    data = TensorDataset(tri_batch(6), TRI)
    torch.manual_seed(0)
    m = likelihood_metrics(model, data)
    torch.manual_seed(0)
    with torch.no_grad():
        nll = -float(model.log_prob(tri_batch(6)).mean())
    assert math.isclose(m["nll"], nll, rel_tol=1e-9)
    assert math.isclose(m["bpd"], nll / ((3 * 64 + 5 + 64) * math.log(2)), rel_tol=1e-9)


# --- a brief training on shapes-captions: translations carry the source's factors -------------------
# Region edges of a shape's centre, in units of the image side (genlab/data/shapes.py: centre =
# MARGIN + pos * (1 - 2 MARGIN), regions split between position indices 10|11 and 20|21 of 32).
EDGES = torch.tensor([0.2 + 0.6 * 10.5 / 31, 0.2 + 0.6 * 20.5 / 31])


def read_region(img):
    """Images [B, 3, H, W] -> (region_x, region_y) [B] each, from the brightness centroid."""
    w = img.sum(1)
    w = w / w.sum((1, 2), keepdim=True).clamp(min=1e-8)
    h, wd = w.shape[1:]
    cx = (w.sum(1) * (torch.arange(wd) + 0.5) / wd).sum(1)
    cy = (w.sum(2) * (torch.arange(h) + 0.5) / h).sum(1)
    return torch.bucketize(cx, EDGES), torch.bucketize(cy, EDGES)


def read_captions(ids):
    """Caption token ids [B, T] -> captioned factors [B, 5] (-1 where a caption does not parse)."""
    rows = []
    for row in ids:
        try:
            p = parse_caption(decode_caption(row))
            rows.append([p["shape"], p["scale"], p["colour"], p["region_x"], p["region_y"]])
        except InvalidDataError:
            rows.append([-1] * 5)
    return torch.tensor(rows)


def brief_coherence(name, steps, seed=0):
    """Train ``name`` on 16x16 shapes-captions for ``steps`` Adam steps; the fraction of val examples
    whose text -> image and image -> text translations land in the source's 3x3 region (chance 1/9)."""
    torch.manual_seed(seed)
    train = genlab.load_dataset("shapes-captions", n=4000, size=16)
    val = genlab.load_dataset("shapes-captions", split="val", n=256, size=16)
    model = genlab.build_model(name, train.spec, z_dim=16, hidden=64, channels=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = model.loss(train[torch.randint(len(train), (32,), generator=g)])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    truth = torch.from_numpy(caption_factors(val.tensors["factors"].numpy()))[:, 3:]  # (region_x, region_y)
    rx, ry = read_region(model.translate({"text": val.tensors["text"]}, mean=True)["x"])
    t2i = ((rx == truth[:, 0]) & (ry == truth[:, 1])).float().mean().item()
    caps = read_captions(model.translate({"x": val.tensors["x"]}, mean=True)["text"])
    i2t = (caps[:, 3:] == truth).all(1).float().mean().item()
    return t2i, i2t


def test_reader_of_regions_is_right_on_the_data():
    val = genlab.load_dataset("shapes-captions", split="val", n=256, size=16)
    truth = torch.from_numpy(caption_factors(val.tensors["factors"].numpy()))
    rx, ry = read_region(val.tensors["x"])
    assert ((rx == truth[:, 3]) & (ry == truth[:, 4])).float().mean() > 0.9
    assert torch.equal(read_captions(val.tensors["text"]), truth)


def test_brief_mmvae_training_translates_far_above_chance():
    t2i, i2t = brief_coherence("mmvae", 300)
    assert t2i > 0.5 and i2t > 0.4, (t2i, i2t)  # chance: 1/9 = 0.11


@pytest.mark.slow
# MVAE's image -> text is the slowest (the product of experts lags the mixtures, as Shi et al. report):
# at 1,200 steps it measured 0.35, 0.54, 0.60 for seeds 0, 1, 2 on one CPU (above 0.4 at seed 0 on another),
# so its bar is 3x chance rather than the mixtures' 0.4.
@pytest.mark.parametrize("name,steps,i2t_min", [("mvae", 1200, 1 / 3), ("mopoe", 400, 0.4), ("mmvaeplus", 400, 0.4)])
def test_brief_training_translates_far_above_chance(name, steps, i2t_min):
    t2i, i2t = brief_coherence(name, steps)
    assert t2i > 0.5 and i2t > i2t_min, (name, t2i, i2t)
