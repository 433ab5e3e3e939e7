"""DDPM mathematics: the forward process, the optimal predictor, DDIM and its inversion, the variational
bound and its terms, eps/v conversions, classifier-free guidance, and loud option errors.

Exact predictors: for data N(m, s^2 I) the posterior mean of the noise is known in closed form,
x_t = a x_0 + b eps ~ N(a m, a^2 s^2 + b^2) => E[eps | x_t] = b (x_t - a m) / (a^2 s^2 + b^2), with
a = sqrt(abar_t), b = sqrt(1 - abar_t); plugging it in as the network isolates the numerics from training.
"""

import math

import pytest
import torch
from conftest import SPECS, tiny_model
from torch import nn

import genlab
from genlab import DataSpec
from genlab.models.ddpm import beta_schedule, discretized_gaussian_log_prob


def vec_spec(dim: int) -> DataSpec:
    return DataSpec(name=f"vec{dim}", kind="vector", shape=(dim,), value_range=None, num_classes=3)


class ExactNet(nn.Module):
    """The Bayes-optimal eps (or v) predictor of data N(m, s^2 I) for ``model``'s schedule."""

    def __init__(self, model, m: float, s: float) -> None:
        super().__init__()
        self.model, self.m, self.s = [model], m, s  # a list: not a submodule (no recursion)
        self.dtype_ref = nn.Parameter(torch.zeros((), dtype=torch.float64))  # samples come in the parameters' dtype

    def forward(self, x, t, c=None):
        model = self.model[0]
        abar = model.coef("abar", t, x)
        a, b = abar.sqrt(), (1 - abar).sqrt()
        eps = b * (x - a * self.m) / (a**2 * self.s**2 + b**2)
        if model.prediction == "eps":
            return eps
        x0 = (x - b * eps) / a
        return a * eps - b * x0


def exact_model(dim=1, m=0.5, s=0.3, **kw):
    model = genlab.build_model("ddpm", vec_spec(dim), channels=2, channel_mult=[1], **kw).double().eval()
    model.net = ExactNet(model, m, s)
    return model


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_process_marginals_match_the_closed_form(schedule):
    """Iterating q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t) from x_0 gives the closed form
    q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t)."""
    model = genlab.build_model("ddpm", vec_spec(1), timesteps=50, schedule=schedule, channels=2)
    betas, abar = model.tables["beta"], model.tables["abar"]
    g = torch.Generator().manual_seed(0)
    x0, n = 0.7, 200_000
    x = torch.full((n,), x0, dtype=torch.float64)
    for t in range(50):
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * torch.randn(n, generator=g, dtype=torch.float64)
        if t in (0, 9, 24, 49):
            mean, var = math.sqrt(abar[t]) * x0, 1 - float(abar[t])
            assert abs(float(x.mean()) - mean) < 5 * math.sqrt(var / n) + 1e-12, (t, float(x.mean()), mean)
            assert abs(float(x.var()) / var - 1) < 0.02, (t, float(x.var()), var)
    # the closed-form sampler draws the same marginal
    xt = model.q_sample(
        torch.full((n, 1), x0, dtype=torch.float64), torch.full((n,), 24), torch.randn(n, 1, generator=g)
    )
    assert abs(float(xt.mean()) - math.sqrt(abar[24]) * x0) < 0.01 and abs(float(xt.var()) / (1 - abar[24]) - 1) < 0.02


def test_schedules_end_near_pure_noise_and_are_monotone():
    for name in ("linear", "cosine"):
        for T in (10, 1000):
            betas = beta_schedule(name, T)
            abar = torch.cumprod(1 - betas, 0)
            assert betas.shape == (T,) and (betas > 0).all() and (betas <= 0.999).all()
            assert (abar.diff() < 0).all() and float(abar[-1]) < 1e-2, (name, T, float(abar[-1]))
    assert torch.allclose(beta_schedule("linear", 1000)[[0, -1]], torch.tensor([1e-4, 0.02], dtype=torch.float64))


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_the_true_noise_predictor_minimizes_the_loss(prediction):
    """On Gaussian data the posterior-mean predictor's loss is the Bayes risk, and perturbing it costs."""
    m, s = 0.5, 0.3
    model = exact_model(dim=2, m=m, s=s, timesteps=100, prediction=prediction)
    x = m + s * torch.randn(20_000, 2, dtype=torch.float64)

    def loss_with(net):
        model.net = net
        torch.manual_seed(1)  # the same t and noise for every predictor
        return float(model.loss({"x": x})["mse"])

    exact = ExactNet(model, m, s)
    best = loss_with(exact)

    class Perturbed(nn.Module):
        def __init__(self, scale, shift):
            super().__init__()
            self.scale, self.shift = scale, shift

        def forward(self, x_t, t, c=None):
            return self.scale * exact(x_t, t) + self.shift

    for scale, shift in ((1.1, 0.0), (0.9, 0.0), (1.0, 0.05), (1.0, -0.05)):
        assert loss_with(Perturbed(scale, shift)) > best, (scale, shift)
    # Bayes risk per dimension: E_t Var(eps | x_t) = E_t[a^2 s^2 / (a^2 s^2 + b^2)]
    abar = model.tables["abar"]
    risk = float((abar * s**2 / (abar * s**2 + 1 - abar)).mean())
    assert abs(best - risk) < 0.05 * risk + 0.002, (best, risk)


def test_eps_and_v_predictions_are_consistent():
    """x0 (and eps) recovered from the true eps and from the true v are identical."""
    spec = SPECS["img17"]
    a_model, v_model = (tiny_model("ddpm", spec, prediction=p) for p in ("eps", "v"))
    x0 = torch.rand(5, *spec.shape, dtype=torch.float64) * 2 - 1
    eps = torch.randn_like(x0)
    t = torch.tensor([0, 2, 4, 6, 7])
    x_t = a_model.q_sample(x0, t, eps)
    abar = a_model.coef("abar", t, x0)
    v = abar.sqrt() * eps - (1 - abar).sqrt() * x0
    eps_a, x0_a = a_model.eps_x0(x_t, t, eps)
    eps_v, x0_v = v_model.eps_x0(x_t, t, v)
    assert torch.allclose(x0_a, x0, atol=1e-10) and torch.allclose(x0_v, x0, atol=1e-10)
    assert torch.allclose(eps_a, eps, atol=1e-10) and torch.allclose(eps_v, eps, atol=1e-10)
    # and with exact predictors of each kind, DDIM draws the very same samples
    samples = []
    for p in ("eps", "v"):
        model = exact_model(dim=2, timesteps=100, prediction=p)
        samples.append(model.sample(50, generator=torch.Generator().manual_seed(0), steps=20))
    assert torch.allclose(*samples, atol=1e-9)


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_and_ancestral_sampling_with_the_exact_predictor_draw_the_data(eta):
    """DDIM (eta 0) and DDPM's ancestral sampler (eta 1), on all T steps, both reproduce N(m, s^2); with
    fewer steps both under-disperse (std 0.18 at 10 steps, 0.28 at 50)."""
    m, s, steps = 0.5, 0.3, 1000
    model = exact_model(dim=1, m=m, s=s, timesteps=1000)
    x = model.sample(20_000, generator=torch.Generator().manual_seed(0), steps=steps, eta=eta)
    assert abs(float(x.mean()) - m) < 0.015 and abs(float(x.std()) / s - 1) < 0.03, (float(x.mean()), float(x.std()))


def test_ddim_inversion_inverts_decode_in_the_limit_of_many_steps():
    """encode (DDIM x_0 -> x_T, eta 0) then decode (x_T -> x_0) is the identity up to an O(1/steps) error."""
    model = exact_model(dim=2, m=0.5, s=0.3, timesteps=1000)
    x = 0.5 + 0.3 * torch.randn(64, 2, dtype=torch.float64)
    errs = []
    for steps in (10, 100, 1000):
        model.sample_steps = steps
        z = model.encode(x)
        assert z.shape == (64, 2)
        errs.append(float((model.decode(z) - x).abs().max()))
    assert errs[2] < errs[1] / 5 < errs[0] / 25 and errs[2] < 0.02, errs  # first order in 1/steps
    # x_T of Gaussian data is (close to) standard normal: the encoder whitens
    z = model.encode(0.5 + 0.3 * torch.randn(5000, 2, dtype=torch.float64))
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1) < 0.05


def test_round_trip_shapes_with_a_network():
    spec = SPECS["img17"]
    model = tiny_model("ddpm", spec, conditional=True).eval()
    x = torch.randint(0, 17, (3, *spec.shape)).double() / 16
    y = torch.tensor([0, 1, 2])
    z = model.encode(x, y)
    assert z.shape == (3, spec.dim) and z.dtype == torch.float64
    rec = model.reconstruct(x, y)
    assert rec.shape == x.shape and rec.dtype == x.dtype
    assert torch.equal(rec * 16, (rec * 16).round()) and rec.min() >= 0 and rec.max() <= 1


def test_the_bound_is_the_sum_of_its_terms():
    spec = SPECS["img17"]
    model = tiny_model("ddpm", spec).eval()
    x = torch.randint(0, 17, (4, *spec.shape)).double() / 16
    torch.manual_seed(5)
    terms = model.bound_terms(x)
    torch.manual_seed(5)
    lp = model.log_prob(x)
    assert terms.shape == (4, model.timesteps + 1) and (terms >= 0).all()  # KLs and -log masses
    assert torch.allclose(-terms.sum(1), lp)
    assert lp.max() <= 0  # a bound on a probability mass


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_the_prior_term_is_tiny(schedule):
    model = genlab.build_model("ddpm", SPECS["img17"], schedule=schedule, channels=2, channel_mult=[1]).double()
    x0 = torch.rand(8, *SPECS["img17"].shape, dtype=torch.float64) * 2 - 1
    assert float(model.prior_term(x0).max()) < 1e-4 * SPECS["img17"].dim


@pytest.mark.parametrize("variance,gap_max", [("large", 0.1), ("small", 0.6)])
def test_the_bound_is_below_and_close_to_the_true_log_density(variance, gap_max):
    """1-D Gaussian data with the exact predictor: the bound averaged over data lies below E[log p(x)]
    (within MC error), and close to it with the reverse variance beta_t (the gap with beta~_t is ~0.47 nats:
    at small t the data are not pinned down by x_t, so the reverse steps need more than beta~_t)."""
    m, s = 0.5, 0.3
    model = exact_model(dim=1, m=m, s=s, timesteps=1000, variance=variance, bound_timesteps=0)
    x = m + s * torch.randn(2000, 1, dtype=torch.float64)
    torch.manual_seed(0)
    bound = model.log_prob(x)
    true = -0.5 * ((x[:, 0] - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
    gap = true - bound
    se = float(gap.std()) / math.sqrt(len(x))
    assert -3 * se < float(gap.mean()) < gap_max, (float(gap.mean()), se)
    # the stratified estimate from 100 of the 1000 steps is unbiased for the same bound
    model.bound_timesteps = 100
    est = torch.stack([model.log_prob(x[:200]).mean() for _ in range(40)])
    se = float(est.std()) / math.sqrt(len(est)) + float(bound[:200].std()) / math.sqrt(200)
    assert abs(float(est.mean()) - float(bound[:200].mean())) < 4 * se, (float(est.mean()), float(bound[:200].mean()))


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_the_discretized_decoder_sums_to_one(levels):
    grid = torch.linspace(-1, 1, levels, dtype=torch.float64)[:, None]  # (L, 1): every level
    mean = torch.tensor([[-1.3, -0.2, 0.0, 0.37, 0.99, 2.0]], dtype=torch.float64)
    for log_scale in (-6.0, -3.0, -1.0, 0.5):
        p = discretized_gaussian_log_prob(grid.expand(-1, 6), mean.expand(levels, -1), log_scale, levels).exp()
        assert torch.allclose(p.sum(0), torch.ones(6, dtype=torch.float64), atol=1e-10), (levels, log_scale)


class Spy(nn.Module):
    """Records the condition vectors it is called with; outputs a fixed function of (x, c)."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x, t, c=None):
        self.seen.append(c)
        return self.w * x + (
            0 if c is None else c.sum(1).view(-1, *[1] * (x.dim() - 1)) * (c.argmax(1) + 1).view(-1, 1)
        )


def test_guidance_scale_zero_is_the_conditional_prediction_and_w_mixes_with_the_null_class():
    model = genlab.build_model("ddpm", vec_spec(2), conditional=True, channels=2).double().eval()
    model.net = Spy()
    x, t = torch.randn(4, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 3])
    c = model.cond_embedding(torch.tensor([0, 1, 2, 0]), x)
    cond = model.model_output(x, t, c, guidance=0.0)
    assert torch.equal(cond, model.net(x, t, c))
    null = model.net(x, t, torch.zeros_like(c))
    assert torch.allclose(model.model_output(x, t, c, guidance=2.0), 3 * cond - 2 * null)


def test_condition_dropout_only_in_training():
    model = genlab.build_model("ddpm", vec_spec(2), conditional=True, p_uncond=0.5, channels=2).double()
    model.net = Spy()
    batch = {"x": torch.randn(200, 2, dtype=torch.float64), "y": torch.arange(200) % 3}
    model.train()
    model.loss(batch)
    dropped = (model.net.seen[-1].sum(1) == 0).double().mean()
    assert 0.35 < float(dropped) < 0.65
    model.eval()
    model.loss(batch)
    assert (model.net.seen[-1].sum(1) == 1).all()


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        ({"timesteps": 0}, "timesteps=0"),
        ({"schedule": "quadratic"}, "schedule='quadratic'"),
        ({"prediction": "x0"}, "prediction='x0'"),
        ({"channels": 0}, "channels=0"),
        ({"channel_mult": []}, "channel_mult=[]"),
        ({"num_res_blocks": 0}, "num_res_blocks=0"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"p_uncond": 1.5}, "p_uncond=1.5"),
        ({"guidance": -1.0}, "guidance=-1.0"),
        ({"sample_steps": 0}, "steps=0"),
        ({"eta": 2.0}, "eta=2.0"),
        ({"bound_timesteps": -1}, "bound_timesteps=-1"),
        ({"variance": "learned"}, "variance='learned'"),
    ],
)
def test_bad_options_are_one_line_errors(kwargs, needle):
    with pytest.raises(ValueError) as info:
        genlab.build_model("ddpm", SPECS["img17"], **kwargs)
    assert needle in str(info.value) and "expected" in str(info.value) and "\n" not in str(info.value)


def test_bad_sample_options_are_one_line_errors():
    model = tiny_model("ddpm", SPECS["vec"])
    for kw, needle in (
        ({"steps": 0}, "steps=0"),
        ({"eta": -0.1}, "eta=-0.1"),
        ({"guidance": math.inf}, "guidance=inf"),
    ):
        with pytest.raises(ValueError, match=needle):
            model.sample(2, **kw)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 64, 64), (2, 6, 10)])
def test_the_unet_fits_common_and_odd_image_sizes(shape):
    spec = DataSpec(name="img", kind="image", shape=shape, levels=256)
    model = genlab.build_model("ddpm", spec, channels=4, channel_mult=[1, 2, 2], attention=[8], timesteps=10)
    x = torch.randn(2, *shape)
    assert model.net(x, torch.tensor([0, 9])).shape == x.shape
    assert model.sample(2, steps=2).shape == (2, *shape)


def test_cli_sample_takes_ddim_steps_eta_and_guidance(tmp_path, capsys):
    from genlab.cli import main

    run = tmp_path / "ddpm"
    args = ["train", "ddpm", "--data", "digits", "--out", str(run), "--quiet", "--set", "conditional=true"]
    args += ["--set", "timesteps=20", "--set", "channels=8", "--set", "channel_mult=[1]", "--set", "steps=2"]
    assert main([*args, "--set", "max_eval_examples=8", "--set", "bound_timesteps=4"]) == 0
    out = tmp_path / "s.png"
    assert (
        main(["sample", str(run), "--n", "4", "--steps", "5", "--eta", "1", "--guidance", "2", "--out", str(out)]) == 0
    )
    assert out.exists()
    capsys.readouterr()
    for extra, message in [(["--steps", "0"], "--steps must be an integer >= 1; got 0"), (["--eta", "2"], "--eta")]:
        assert main(["sample", str(run), "--n", "2", *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


# --- caption conditioning (text_conditional=True) ----------------------------------------------------------------
def text_model(**kw):
    """A tiny caption-conditional DDPM on SPECS["pairs"] (3 x 8 x 8 binary images, captions of 5 ids), float64;
    AdaGN blocks: at width 8 an embedding added before the GroupNorm is removed by it (see the next test)."""
    opts = {
        "timesteps": 8,
        "channels": 8,
        "channel_mult": [1],
        "attention": [],
        "sample_steps": 4,
        "scale_shift_norm": True,
    }
    opts |= {"text_dim": 4, "text_hidden": 6, **kw}
    return genlab.build_model("ddpm", SPECS["pairs"], text_conditional=True, **opts).double()


def pairs_batch(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 2, (n, 3, 8, 8), generator=g).double()
    return {"x": x, "text": torch.randint(0, 5, (n, 5), generator=g), "y": torch.randint(0, 3, (n,), generator=g)}


def randomize(model):
    """Noise on every zero-initialized weight (the U-Net's residual branches and output start at 0, where
    the output reads neither x_t nor the condition)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


@pytest.mark.parametrize("scale_shift", [False, True])
def test_the_unet_reads_t_and_the_condition_at_small_widths(scale_shift):
    """A group of one channel would remove an added per-channel embedding exactly; ``norm`` keeps >= 4
    channels per group, so plain and AdaGN (scale_shift_norm) blocks both read t and c at tiny widths."""
    from genlab.models.unet import norm

    assert [norm(c).num_groups for c in (3, 8, 16, 32, 64, 128, 256)] == [1, 2, 4, 8, 16, 32, 32]
    model = randomize(text_model(scale_shift_norm=scale_shift)).eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    c = torch.randn(2, 6, dtype=torch.float64)
    out = model.net(x, torch.tensor([1, 1]), c)
    for other in (model.net(x, torch.tensor([6, 6]), c), model.net(x, torch.tensor([1, 1]), torch.zeros_like(c))):
        assert (out - other).abs().max() > 1e-4


def test_text_condition_is_the_caption_and_the_zero_vector_is_the_null_condition():
    model = text_model()
    batch = pairs_batch(4)
    assert model.condition(batch) is batch["text"]  # not the class ids "y" of the same batch
    assert model.c_dim == 6 and not model.conditional
    t = torch.tensor([0, 3, 5, 7])
    # the caption enters through the bias-free map: h = 0 embeds exactly as no condition at all
    assert torch.equal(
        model.net.time(t, torch.zeros(4, 6, dtype=torch.float64), torch.float64), model.net.time(t, None, torch.float64)
    )


class Recorder(nn.Module):
    """A stand-in network that records the condition vectors it is given and predicts 0."""

    def __init__(self) -> None:
        super().__init__()
        self.w, self.seen = nn.Parameter(torch.zeros((), dtype=torch.float64)), []

    def forward(self, x, t, c=None):
        self.seen.append(c)
        return self.w * x


def test_text_condition_dropout_only_in_training():
    model = text_model(p_uncond=0.5)
    model.net = Recorder()
    batch = pairs_batch(200)
    model.train()
    model.loss(batch)
    dropped = (model.net.seen[-1].abs().sum(1) == 0).double().mean()
    assert 0.35 < float(dropped) < 0.65
    model.eval()
    model.loss(batch)
    h = model.cond_embedding(batch["text"], batch["x"])
    assert torch.equal(model.net.seen[-1], h)  # no dropout outside training: the caption vectors themselves


def test_text_guidance_zero_is_the_conditional_prediction_and_w_mixes_with_the_null_caption():
    model = randomize(text_model()).eval()
    batch = pairs_batch(4)
    x, t = model.to_model(batch["x"]), torch.tensor([0, 2, 4, 7])
    h = model.cond_embedding(batch["text"], x)
    cond = model.model_output(x, t, h, guidance=0.0)
    assert torch.equal(cond, model.net(x, t, h))
    null = model.net(x, t, torch.zeros_like(h))
    assert not torch.allclose(cond, null)  # the caption matters (after randomize)
    assert torch.allclose(model.model_output(x, t, h, guidance=1.5), 2.5 * cond - 1.5 * null)


def test_the_output_reads_the_caption_tokens():
    """d output / d token embeddings is nonzero at every position: the GRU reads the whole caption."""
    model = randomize(text_model()).eval()
    batch = pairs_batch(3)
    emb = model.text_encoder.tok_emb(batch["text"]).detach().requires_grad_(True)  # (B, T, text_dim)
    x, t = model.to_model(batch["x"]), torch.tensor([1, 4, 6])
    model.net(x, t, model.text_encoder.embedded(emb)).pow(2).sum().backward()
    assert (emb.grad.abs().sum(-1) > 0).all()
    assert torch.equal(
        model.text_encoder.embedded(model.text_encoder.tok_emb(batch["text"])), model.cond_embedding(batch["text"], x)
    )


def test_text_mode_protocol_shapes_and_capabilities():
    model = randomize(text_model(bound_timesteps=0)).eval()
    batch = pairs_batch(3)
    caps = model.capabilities
    assert caps.modalities == ("x", "text") and caps.generates("x") and not caps.generates("text")
    assert not caps.sample and type(model).capabilities.modalities == ()  # per instance, the class keeps its own
    torch.manual_seed(0)
    lp = model.log_prob({"x": batch["x"], "text": batch["text"]}, batch["text"])  # as the likelihood metrics call it
    torch.manual_seed(0)
    assert torch.allclose(lp, model.log_prob(batch["x"], batch["text"])) and lp.shape == (3,)
    torch.manual_seed(0)
    assert torch.allclose(lp, -model.bound_terms(batch["x"], batch["text"]).sum(1))  # all T terms, same draws
    assert model.sample(3, batch["text"]).shape == (3, 3, 8, 8)
    out = model.translate({"text": batch["text"][:2]}, ["x"], n=2)["x"]
    assert out.shape == (4, 3, 8, 8) and set(out.unique().tolist()) <= {0.0, 1.0}
    z = model.encode({"x": batch["x"], "text": batch["text"]})
    assert z.shape == (3, 192) and model.decode(z, batch["text"]).shape == (3, 3, 8, 8)
    assert model.reconstruct(batch["x"], batch["text"]).shape == (3, 3, 8, 8)
    with pytest.raises(NotImplementedError, match="translate"):  # no p(caption): the trainer's grid skips it
        model.sample(2)


@pytest.mark.parametrize(
    "spec,kwargs,needle",
    [
        ("img17", {}, "image 'x' + caption 'text'"),
        ("pairs", {"conditional": True}, "conditional=True is not supported"),
        ("pairs", {"text_dim": 0}, "text_dim=0"),
        ("pairs", {"text_hidden": 0}, "text_hidden=0"),
        ("vec", {"text_conditional": False, "scale_shift_norm": True}, "scale_shift_norm=True"),
    ],
)
def test_bad_text_options_are_one_line_errors(spec, kwargs, needle):
    with pytest.raises(ValueError) as info:
        genlab.build_model("ddpm", SPECS[spec], **{"text_conditional": True, "channels": 4, **kwargs})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_bad_text_calls_are_one_line_errors():
    model = text_model().eval()
    batch = pairs_batch(2)
    for call, needle in (
        (lambda: model.log_prob(batch["x"]), "pass cond = caption token ids"),
        (lambda: model.log_prob(batch["x"], batch["text"].double()), "token ids long"),
        (lambda: model.sample(3, batch["text"]), "n captions"),
        (lambda: model.translate({"x": batch["x"]}, ["text"]), "translates captions to images only"),
        (lambda: text_model().log_prob({"x": batch["x"], "y": batch["y"]}), "got a dict"),
        (lambda: tiny_model("ddpm", SPECS["pairs"]).translate({"text": batch["text"]}), "text_conditional=True"),
    ):
        with pytest.raises(ValueError, match=needle) as info:
            call()
        assert "\n" not in str(info.value)


@pytest.mark.slow  # ~20 s: 400 training steps and the bound of 64 held-out images twice
def test_a_briefly_trained_text_model_scores_true_captions_above_shuffled_ones():
    """After 400 steps on shapes-captions at 8 x 8 the bound on held-out images is higher given their own
    captions than given another image's (colour, size and place are in the caption)."""
    from genlab.data import load_dataset

    torch.set_num_threads(1)
    train = load_dataset("shapes-captions", "train", n=2000, size=8)
    test = load_dataset("shapes-captions", "test", n=64, size=8)
    model = genlab.build_model(
        "ddpm",
        train.spec,
        text_conditional=True,
        timesteps=50,
        channels=16,
        channel_mult=[1],
        attention=[],
        text_dim=16,
        text_hidden=32,
        bound_timesteps=0,
        p_uncond=0.1,
        scale_shift_norm=True,  # at width 16 the plain blocks cannot read the caption (see above)
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(400):
        idx = torch.randint(0, len(train), (64,), generator=g)
        loss = model.loss({k: v[idx] for k, v in train.tensors.items()})["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, text = test.tensors["x"], test.tensors["text"]
    shuffled = text.roll(1, 0)
    assert (shuffled != text).any(1).all()
    torch.manual_seed(1)
    true = model.log_prob(x, text)
    torch.manual_seed(1)  # the same draws of x_t: the difference is the caption's alone
    other = model.log_prob(x, shuffled)
    gain = float((true - other).mean())
    assert gain > 1.0, gain  # nats per image


def test_cli_translates_captions_to_images_with_a_text_conditional_run(tmp_path, capsys):
    from genlab.cli import main

    run = tmp_path / "ddpm-text"
    args = ["train", "ddpm", "--data", "shapes-captions", "--out", str(run), "--quiet"]
    args += ["--data-opt", "size=8", "--data-opt", "n=64", "--set", "text_conditional=true", "--set", "steps=2"]
    args += ["--set", "timesteps=20", "--set", "channels=8", "--set", "channel_mult=[1]", "--set", "attention=[]"]
    args += ["--set", "text_dim=4", "--set", "text_hidden=4", "--set", "scale_shift_norm=true"]
    assert main([*args, "--set", "max_eval_examples=4", "--set", "bound_timesteps=2", "--set", "sample_steps=2"]) == 0
    assert (run / "translation.png").exists()  # the end-of-training figure: captions of the data, 8 images each
    out = tmp_path / "t.png"
    assert (
        main(["translate", str(run), "--text", "a small red heart in the top left", "--n", "3", "--out", str(out)]) == 0
    )
    assert out.exists() and "wrote 3 images" in capsys.readouterr().out
    assert main(["translate", str(run), "--image", str(out), "--to", "text"]) == 2  # one-way: captions -> images
    assert "produces x only" in capsys.readouterr().err
