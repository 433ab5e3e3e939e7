"""Normalizing flows against mathematics: every transform is a bijection whose log|det J| equals the
brute-force autograd Jacobian; a flow's density integrates to 1; bits/dim are counted exactly.
Tiny float64 models with fixed seeds (the registry-wide contract lives in test_contract.py)."""

import math

import pytest
import torch

import genlab
from genlab import DataSpec
from genlab.checkpoint import load_tensors, save_tensors
from genlab.data.base import TensorDataset
from genlab.metrics.likelihood import bits_per_dim, likelihood_metrics
from genlab.models.flows.base import FlowModel
from genlab.models.flows.dequantization import VariationalDequantizer
from genlab.models.flows.splines import SplineCoupling, rq_spline
from genlab.models.flows.transforms import (
    ActNorm,
    AffineCoupling,
    Chain,
    CondConvNet,
    CondMLP,
    Flatten,
    InvConv1x1,
    Logit,
    MaskedAffineAutoregressive,
    MultiScale,
    Reverse,
    Squeeze,
)

K = 3  # classes of the conditional variants
VEC = DataSpec(name="vec", kind="vector", shape=(2,), value_range=None, num_classes=K)
IMG = DataSpec(name="img", kind="image", shape=(1, 4, 4), levels=5, num_classes=K)


def perturb(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Move every parameter off its (often identity) init so the maps are non-trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, ActNorm):
                m.initialized.fill_(True)
    return module


def multiscale() -> MultiScale:
    def level(ch: int, h: int) -> Chain:
        return Chain(
            [
                Squeeze(),
                ActNorm(4 * ch),
                InvConv1x1(4 * ch),
                AffineCoupling(CondConvNet(2 * ch, 4, 4 * ch, K), "half", 4 * ch),
            ]
        )

    return MultiScale([level(1, 4), level(2, 2)], (1, 4, 4))


# name -> (transform factory, per-example input shape, takes a class condition)
TRANSFORMS = {
    "actnorm-vec": (lambda: ActNorm(3), (3,), False),
    "actnorm-img": (lambda: ActNorm(2), (2, 3, 3), False),
    "invconv-plain": (lambda: InvConv1x1(3, lu=False), (3, 2, 2), False),
    "invconv-lu": (lambda: InvConv1x1(3, lu=True), (3, 2, 2), False),
    "invconv-lu-vec": (lambda: InvConv1x1(4, lu=True), (4,), False),
    "coupling-half-vec": (lambda: AffineCoupling(CondMLP(2, (8,), 2, K), "half", 3, parity=0), (3,), True),
    "coupling-half-vec-parity1": (lambda: AffineCoupling(CondMLP(1, (8,), 4, 0), "half", 3, parity=1), (3,), False),
    "coupling-channel-img": (lambda: AffineCoupling(CondConvNet(1, 4, 2, K), "half", 2, parity=1), (2, 3, 3), True),
    "coupling-checkerboard": (
        lambda: AffineCoupling(CondConvNet(2, 4, 4, K), "checkerboard", 2, 1, (3, 4)),
        (2, 3, 4),
        True,
    ),
    "squeeze": (lambda: Squeeze(), (2, 4, 2), False),
    "multiscale": (multiscale, (1, 4, 4), True),
    "maf-layer": (lambda: MaskedAffineAutoregressive(4, (16, 16), torch.tensor([2, 0, 3, 1]), K), (4,), True),
    "spline-coupling": (lambda: SplineCoupling(CondMLP(2, (8,), 2 * 11, K), 4, 4, 1.5, parity=0, hidden=8), (4,), True),
    "logit": (lambda: Logit(0.05), (3,), False),
    "flatten": (lambda: Flatten((1, 2, 2)), (1, 2, 2), False),
    "reverse": (lambda: Reverse(), (3,), False),
}


def make(name: str):
    torch.manual_seed(0)
    factory, shape, cond = TRANSFORMS[name]
    t = perturb(factory().double())
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, *shape, generator=g, dtype=torch.float64)
    if name == "logit":
        x = torch.rand(4, *shape, generator=g, dtype=torch.float64)
    if name == "spline-coupling":
        x = x * 1.2  # some coordinates fall outside [-1.5, 1.5]: the identity tails are tested too
    c = torch.nn.functional.one_hot(torch.arange(4) % K, K).double() if cond else None
    return t, x, c


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_inverse_and_log_det(name):
    t, x, c = make(name)
    z, ladj = t(x, c)
    assert ladj.shape == (4,)
    assert torch.allclose(t.inverse(z, c), x, atol=1e-10), "inverse(forward(x)) != x"
    for i in range(4):  # brute force: log|det| of the autograd Jacobian of one example
        ci = None if c is None else c[i : i + 1]
        jac = torch.autograd.functional.jacobian(
            lambda v, ci=ci: t(v.view(1, *x.shape[1:]), ci)[0].flatten(), x[i].flatten()
        )
        assert jac.shape[0] == jac.shape[1]
        assert torch.allclose(torch.linalg.slogdet(jac)[1], ladj[i], atol=1e-8), name


def test_spline_is_identity_at_zero_params_and_monotone():
    x = torch.linspace(-3, 3, 101, dtype=torch.float64)
    zero = torch.zeros(101, 5, dtype=torch.float64)
    y, ladj = rq_spline(x, zero, zero, zero[:, :4], bound=2.0)
    assert torch.allclose(y, x, atol=1e-12) and torch.allclose(ladj, torch.zeros_like(ladj), atol=1e-12)
    g = torch.Generator().manual_seed(0)
    w, h, d = (torch.randn(1, 5, generator=g, dtype=torch.float64).expand(101, 5) for _ in range(3))
    y, _ = rq_spline(x, w, h, d[:, :4], bound=2.0)
    assert (y[1:] > y[:-1]).all() and y[0] == -3 and y[-1] == 3  # monotone, identity tails


# --- whole models -----------------------------------------------------------------------------

VECTOR_MODELS = [
    ("realnvp", dict(n_couplings=4, hidden=16)),
    ("maf", dict(n_layers=3, hidden=(16, 16))),
    ("nsf", dict(n_couplings=3, hidden=16, bound=3.0)),
    ("glow", dict(steps=3, hidden=16)),
]
IMAGE_MODELS = [
    ("realnvp", dict(hidden=8, stage_couplings=1)),
    ("glow", dict(steps=2, hidden=8)),
    ("maf", dict(n_layers=2, hidden=(32,))),
]


def model(name: str, spec: DataSpec, perturb_scale: float = 0.3, **kw) -> FlowModel:
    torch.manual_seed(0)
    m = genlab.build_model(name, spec, **kw).double()
    return perturb(m, perturb_scale).eval()  # type: ignore[return-value]


@pytest.mark.parametrize("name,kw", VECTOR_MODELS + [(n, dict(k, conditional=True)) for n, k in VECTOR_MODELS[:3]])
def test_vector_model_log_prob_is_the_change_of_variables(name, kw):
    m = model(name, VEC, **kw)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    cond = torch.arange(5) % K if m.conditional else None
    lp = m.log_prob(x, cond)
    z = m.encode(x, cond)
    assert torch.allclose(m.decode(z, cond), x, atol=1e-9)  # exact inverse
    for i in range(5):
        ci = None if cond is None else cond[i : i + 1]
        jac = torch.autograd.functional.jacobian(lambda v, ci=ci: m.encode(v.view(1, 2), ci)[0], x[i])
        want = -0.5 * z[i].pow(2).sum() - math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        assert torch.allclose(lp[i], want, atol=1e-8)
    if m.conditional:
        assert not torch.allclose(lp, m.log_prob(x, (cond + 1) % K))


@pytest.mark.parametrize("name,kw", IMAGE_MODELS)
def test_image_model_density_of_dequantized_data(name, kw):
    """log_prob(x) = log p_Y(y) for y = (level + u) / L: rebuild y from the same noise and compare
    with N(z) times the brute-force Jacobian of the whole pipeline y -> z (logit included)."""
    m = model(name, IMG, 0.1, dequantization="uniform", **kw)
    levels = torch.randint(0, 5, (3, 1, 4, 4), generator=torch.Generator().manual_seed(3)).double()
    x = levels / 4
    torch.manual_seed(7)
    lp = m.log_prob(x)
    torch.manual_seed(7)
    y = (levels + torch.rand_like(x)) / 5
    for i in range(3):
        f = lambda v: m.flow(m.pre(v.view(1, 1, 4, 4))[0])[0][0]  # noqa: E731
        z = f(y[i].flatten())
        jac = torch.autograd.functional.jacobian(f, y[i].flatten())
        want = -0.5 * z.pow(2).sum() - 8 * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        assert torch.allclose(lp[i], want, atol=1e-7)
    assert torch.equal(m.decode(m.encode(x)), x)  # bin centres map back to their levels exactly


@pytest.mark.parametrize("name,kw", VECTOR_MODELS)
def test_density_integrates_to_one_on_a_grid(name, kw):
    m = model(name, VEC, 0.15, **kw)
    n, r = 401, 9.0
    g = torch.linspace(-r, r, n, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g)
    with torch.no_grad():
        p = m.log_prob(grid).exp()
    mass = float(p.sum()) * (2 * r / (n - 1)) ** 2
    assert abs(mass - 1) < 0.01, mass


class _UniformModel(FlowModel):
    """No transforms after the logit (alpha = 0) and a standard logistic base: the density of the
    dequantized data is exactly 1 on [0, 1]^D (logit of a uniform variable is logistic)."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__(spec, logit_alpha=0.0)
        self.flow = Flatten(spec.shape)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return -(torch.nn.functional.softplus(z) + torch.nn.functional.softplus(-z)).sum(1)


def test_uniform_model_on_8bit_images_has_exactly_8_bits_per_dim():
    spec = DataSpec(name="rgb", kind="image", shape=(3, 4, 4), levels=256)
    x = torch.randint(0, 256, (50, 3, 4, 4), generator=torch.Generator().manual_seed(0)).double() / 255
    m = _UniformModel(spec).double()
    assert torch.allclose(m.log_prob(x), torch.zeros(50, dtype=torch.float64), atol=1e-9)
    res = likelihood_metrics(m, TensorDataset({"x": x}, spec))
    assert abs(res["bpd"] - 8.0) < 1e-9
    assert bits_per_dim(0.0, spec, discrete=False) == pytest.approx(8.0, abs=1e-12)


def test_actnorm_data_init_standardizes_and_survives_save_and_load(tmp_path):
    a = ActNorm(3).double()
    x = torch.randn(64, 3, 2, 2, dtype=torch.float64) * torch.tensor([5.0, 0.1, 2.0]).double().view(1, 3, 1, 1) + 3
    z, _ = a(x)  # first call in training mode: z has zero mean and unit variance per channel
    assert bool(a.initialized)
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(z.std((0, 2, 3), unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-5)
    torch.manual_seed(0)
    m = genlab.build_model("glow", IMG, steps=1, hidden=4).double()
    m.loss({"x": torch.randint(0, 5, (16, 1, 4, 4)).double() / 4})
    save_tensors(m.state_dict(), tmp_path / "m.safetensors")
    twin = genlab.build_model("glow", IMG, steps=1, hidden=4).double()
    twin.load_state_dict(load_tensors(tmp_path / "m.safetensors")[0])
    before = {k: v.clone() for k, v in twin.state_dict().items()}
    twin.loss({"x": torch.rand(16, 1, 4, 4).double()})  # training mode again: must not re-initialize
    assert all(torch.equal(before[k], v) for k, v in twin.state_dict().items())


def test_variational_dequantizer_density_and_bins():
    torch.manual_seed(0)
    deq = perturb(VariationalDequantizer((1, 2, 2), hidden=4, n_couplings=2).double(), 0.3)
    levels = torch.randint(0, 5, (3, 1, 2, 2)).double()
    torch.manual_seed(1)
    y, log_q = deq(levels, 5)
    assert torch.equal(torch.floor(y * 5), levels)  # the noise stays inside each level's bin
    torch.manual_seed(1)
    eps = torch.randn_like(levels)
    ctx = levels / 4 - 0.5
    for i in range(3):  # q(u) = N(eps) / |det du/deps| by the change of variables
        f = lambda e, i=i: torch.sigmoid(deq.flow(e.view(1, 1, 2, 2), ctx[i : i + 1])[0]).flatten()  # noqa: E731
        jac = torch.autograd.functional.jacobian(f, eps[i].flatten())
        want = -0.5 * eps[i].pow(2).sum() - 2 * math.log(2 * math.pi) - torch.linalg.slogdet(jac)[1]
        assert torch.allclose(log_q[i], want, atol=1e-8)


@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
def test_discrete_samples_and_training_step(dequantization):
    m = model("realnvp", IMG, 0.05, hidden=8, stage_couplings=1, dequantization=dequantization, conditional=True)
    m.train()
    batch = {"x": torch.randint(0, 5, (8, 1, 4, 4)).double() / 4, "y": torch.arange(8) % K}
    out = m.loss(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and 0 < float(out["bpd"]) < 10
    m.eval()
    s = m.sample(6, torch.arange(6) % K, generator=torch.Generator().manual_seed(0), temperature=0.7)
    assert s.shape == (6, 1, 4, 4) and torch.equal(s * 4, (s * 4).round()) and s.min() >= 0 and s.max() <= 1
    with pytest.raises(ValueError, match="conditional"):
        m.log_prob(batch["x"])


def test_sampling_temperature_scales_the_latent():
    m = model("realnvp", VEC, n_couplings=2, hidden=8)
    s = m.sample(7, generator=torch.Generator().manual_seed(5), temperature=0.5)
    z = torch.randn(7, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * 0.5
    assert torch.allclose(m.encode(s), z, atol=1e-9)


def test_cli_train_eval_sample_and_density_png(tmp_path, capsys):
    from genlab.cli import main

    out = tmp_path / "maf"
    fast = [
        "--set",
        "steps=30",
        "--set",
        "eval_every=15",
        "--set",
        "sample_every=30",
        "--set",
        "n_layers=2",
        "--set",
        "hidden=[16, 16]",
        "--data-opt",
        "n=400",
        "--quiet",
    ]
    assert main(["train", "maf", "--data", "moons", "--out", str(out), *fast]) == 0
    assert (out / "density.png").exists() and (out / "samples.png").exists()
    assert main(["eval", str(out), "--split", "val"]) == 0
    printed = capsys.readouterr().out
    assert "log_prob_nats" in printed and "log_prob_bpd" in printed
    assert main(["sample", str(out), "--n", "5", "--out", str(tmp_path / "s.npy")]) == 0


def test_maf_dropout_keeps_each_layer_autoregressive_and_acts_only_in_training():
    """With dropout on, a training-mode MADE output d still depends only on the inputs before d
    (Jacobian strictly triangular in the layer's order); in eval mode the density is deterministic."""
    torch.manual_seed(0)
    d = 6
    layer = MaskedAffineAutoregressive(d, [32, 32], torch.arange(d), dropout=0.5)
    for p in layer.parameters():  # the last layer starts at zero: give it weights to see through
        torch.nn.init.normal_(p, 0.0, 0.3)
    x = torch.randn(1, d)
    layer.train()
    assert not torch.equal(layer(x)[0], layer(x)[0])  # dropout is on
    for _ in range(3):  # a new dropout mask each pass
        jac = torch.autograd.functional.jacobian(lambda v: layer(v)[0], x)[0, :, 0, :]  # [D out, D in]
        assert torch.all(jac.triu(1) == 0)  # z_d sees x_<=d only (x_d through its own scale)
    layer.eval()
    assert torch.equal(layer(x)[0], layer(x)[0])
    with torch.no_grad():
        z = layer(x)[0]
    layer.train()  # the inverse (sampling) uses the whole network even in training mode
    assert torch.allclose(layer.inverse(z), x, atol=1e-5)
    spec = DataSpec(name="v", kind="vector", shape=(4,))
    with pytest.raises(ValueError, match="dropout"):
        genlab.build_model("maf", spec, dropout=1.0)
