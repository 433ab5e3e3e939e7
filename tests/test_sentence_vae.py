"""The sentence VAE's mathematics (Bowman et al. 2016): a normalised decoder, the ELBO <= IWAE-k <= log p(x)
ordering against the exact marginal of a 1-D latent, causality, word dropout, and a short run on captions."""

import math

import pytest
import torch

import genlab
from genlab import DataSpec
from genlab.data import load_dataset
from genlab.data.base import InvalidDataError
from genlab.data.shapes import UNK, decode_caption, parse_caption

TOK = DataSpec(name="tok3", kind="tokens", shape=(3,), dtype="int64", value_range=None, levels=3, vocab=("a", "b", "c"))


def _model(spec: DataSpec = TOK, **kw) -> genlab.GenerativeModel:
    torch.manual_seed(0)
    kw = {"z_dim": 2, "embed": 4, "hidden": 6, **kw}
    return genlab.build_model("sentencevae", spec, **kw).double().eval()


def _all_sequences(v: int, t: int) -> torch.Tensor:
    return torch.cartesian_prod(*[torch.arange(v)] * t)  # [v^t, t]


def test_decoder_is_normalised_over_all_sequences():
    m = _model()
    xs = _all_sequences(3, 3)
    for z in torch.randn(3, 1, 2, dtype=torch.float64) * 2:
        total = torch.logsumexp(m.log_px_z(xs, z.expand(len(xs), -1)), 0)
        assert abs(float(total.detach())) < 1e-10


def test_no_unk_in_vocabulary_gets_a_dedicated_dropout_token():
    m = _model()
    assert m.drop_id == 3 and m.emb.num_embeddings == 4 and m.out.out_features == 3
    caps = load_dataset("shapes-captions", "val").spec
    mc = genlab.build_model("sentencevae", caps, source="text", z_dim=2, embed=4, hidden=4)
    assert mc.drop_id == UNK and mc.emb.num_embeddings == len(caps.vocab)


def _exact_log_px(m, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log int p(x|z) N(z; 0, 1) dz for z_dim = 1, by the trapezoid rule on a fine grid."""
    zs = torch.linspace(-10, 10, 4001, dtype=torch.float64)
    dz = float(zs[1] - zs[0])
    rows = []
    for xi in x:
        lp = m.log_px_z(xi.expand(len(zs), -1), zs[:, None]) - 0.5 * (zs**2 + math.log(2 * math.pi))
        w = torch.full_like(zs, math.log(dz))
        w[[0, -1]] += math.log(0.5)
        rows.append(torch.logsumexp(lp + w, 0))
    return torch.stack(rows)


def test_elbo_below_iwae_below_exact_marginal_for_a_1d_latent():
    m = _model(z_dim=1)
    with torch.no_grad():  # a sharper decoder, so that the bounds differ visibly, and a broad q(z|x)
        for name, p in m.named_parameters():
            p.mul_(0.3 if name.startswith("enc_head") else 3.0)
        xs = _all_sequences(3, 3)
        exact = _exact_log_px(m, xs)
        assert abs(float(torch.logsumexp(exact, 0))) < 1e-6  # the marginal sums to one as well
        x = xs[[0, 5, 13, 26]]
        n = 400
        rep = x.repeat(n, 1)
        elbo = m.log_prob(rep, k=1).view(n, -1).mean(0)
        iwae8 = m.log_prob(rep, k=8).view(n, -1).mean(0)
        iwae64 = m.log_prob(rep, k=64).view(n, -1).mean(0)
        big = m.log_prob(x, k=200_000)
    ex = exact[[0, 5, 13, 26]]
    assert (elbo < iwae8).all() and (iwae8 < iwae64).all() and (iwae64 < ex + 1e-3).all()
    assert (ex - elbo).min() > 0.01  # the ELBO's gap is real here
    assert torch.allclose(big, ex, atol=0.02), (big, ex)
    # the k=1 bound agrees in expectation with the analytic-KL ELBO of the loss
    with torch.no_grad():
        mu, logvar = m.posterior(rep)
        eps = torch.randn_like(mu)
        rec = m.log_px_z(rep, mu + torch.exp(0.5 * logvar) * eps).view(n, -1).mean(0)
        kl = genlab.distributions.gaussian_kl_standard(mu, logvar).view(n, -1).mean(0)
    assert torch.allclose(rec - kl, elbo, atol=0.15)


def test_decoder_is_causal():
    m = _model(spec=DataSpec(name="t6", kind="tokens", shape=(6,), dtype="int64", value_range=None, levels=5))
    x = torch.randint(0, 5, (2, 6))
    z = torch.randn(2, 2, dtype=torch.float64)
    captured = {}
    hook = m.emb.register_forward_hook(lambda mod, inp, out: captured.setdefault("e", out))
    logits = m.decoder_logits(x, z)  # embeddings of the inputs x_1 .. x_{T-1}
    hook.remove()
    e = captured["e"]
    for t in range(6):
        (g,) = torch.autograd.grad(logits[:, t].sum(), e, retain_graph=True)
        assert g[:, t:].abs().sum() == 0  # x_{t+1}.. (0-based t..) do not reach p(x_t | .)
        if t > 0:
            assert g[:, t - 1].abs().max() > 0
    # changing later tokens leaves earlier predictions bit for bit
    y = x.clone()
    y[:, 3:] = (y[:, 3:] + 1) % 5
    with torch.no_grad():
        assert torch.equal(m.decoder_logits(x, z)[:, :4], m.decoder_logits(y, z)[:, :4])


def test_word_dropout_only_in_training():
    m = _model(word_dropout=0.9)
    x, z = torch.randint(0, 3, (16, 3)), torch.randn(16, 2, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(m.decoder_logits(x, z), m.decoder_logits(x, z))
        m.train()
        a, b = m.decoder_logits(x, z), m.decoder_logits(x, z)
        assert not torch.equal(a, b)
        assert torch.equal(a[:, 0], b[:, 0])  # the first step reads only the start vector and z
        # with every input dropped, the decoder reads only the dropout token
        m.word_dropout = 0.999999
        torch.manual_seed(1)
        dropped = m.decoder_logits(x, z)
        m.eval()
        assert torch.allclose(dropped, m.decoder_logits(torch.full_like(x, m.drop_id), z))


def test_refusals():
    with pytest.raises(ValueError, match="source"):
        genlab.build_model("sentencevae", TOK, source="y")
    with pytest.raises(ValueError, match="word_dropout"):
        genlab.build_model("sentencevae", TOK, word_dropout=1.0)
    m = _model()
    with pytest.raises(ValueError, match="token ids"):
        m.log_prob(torch.zeros(2, 4, dtype=torch.long))


def test_training_on_captions_lowers_the_bound_and_reconstructs():
    torch.manual_seed(0)
    train, val = load_dataset("shapes-captions", "train"), load_dataset("shapes-captions", "val")
    tr, va = train.tensors["text"][:4000], val.tensors["text"][:400]
    # warm-up longer than the run: the KL weight stays < 1 (Bowman et al.'s annealing, mid-schedule)
    m = genlab.build_model(
        "sentencevae", train.spec, source="text", z_dim=8, embed=32, hidden=64, word_dropout=0.25, warmup_steps=10000
    )

    def held_out() -> float:
        m.eval()
        with torch.no_grad():
            return float(m.log_prob(va, k=1).mean())

    before = held_out()
    opt = torch.optim.Adam(m.parameters(), lr=5e-3)
    for _ in range(800):
        m.train()
        idx = torch.randint(0, len(tr), (64,))
        # the trainer's path: batch["x"] is the image, the captions come through condition()
        out = m.loss({"text": tr[idx], "x": torch.zeros(64, 1)})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    after = held_out()
    assert after > before + 10, (before, after)  # nats per caption
    m.eval()
    assert m.log_prob(torch.zeros(4, 1), tr[:4], k=4).shape == (4,)  # image as x, captions as cond
    rec = m.reconstruct(tr[:200])
    ok = sum(decode_caption(r) == decode_caption(t) for r, t in zip(rec, tr[:200]))
    assert ok >= 120, ok
    print(f"held-out ELBO {before:.2f} -> {after:.2f} nats per caption; exact reconstructions {ok}/200")

    def n_valid(rows: torch.Tensor) -> int:
        valid = 0
        for row in rows:
            try:
                parse_caption(decode_caption(row))
                valid += 1
            except InvalidDataError:
                pass
        return valid

    lines = [m.interpolate(tr[2 * i], tr[2 * i + 1], steps=5) for i in range(10)]
    assert lines[0].shape == (5, train.spec.extra["text_len"])
    assert torch.equal(lines[0][0], rec[0]) and torch.equal(lines[0][-1], rec[1])  # the ends: a's and b's codes
    valid_lines = n_valid(torch.cat(lines))
    valid_samples = n_valid(m.sample(20, generator=torch.Generator().manual_seed(0)))
    print(f"valid captions: {valid_lines}/50 on interpolation lines, {valid_samples}/20 prior samples")
    assert valid_lines >= 30 and valid_samples >= 8, (valid_lines, valid_samples)


def test_beta_scales_the_annealed_kl_weight_and_elbo_stays_the_bound():
    spec = load_dataset("shapes-captions", "val").spec
    m = genlab.build_model("sentencevae", spec, source="text", z_dim=2, embed=8, hidden=8, warmup_steps=4, beta=0.25)
    text = load_dataset("shapes-captions", "val").tensors["text"][:8]
    weights = []
    for _ in range(6):
        m.train()
        out = m.loss({"text": text})
        weights.append(float(out["kl_weight"]))
        # the loss uses the weight; the logged ELBO is the unweighted bound
        assert float(out["loss"]) == pytest.approx(float(out["kl_weight"] * out["kl"] + out["recon"]), rel=1e-5)
        assert float(out["elbo"]) == pytest.approx(-float(out["kl"] + out["recon"]), rel=1e-5)
    assert weights == pytest.approx([0.0, 0.0625, 0.125, 0.1875, 0.25, 0.25])
    with pytest.raises(ValueError, match="beta .* must be > 0; got 0"):
        genlab.build_model("sentencevae", spec, source="text", beta=0)
