"""The protocol itself: capabilities as data (and every family's declaration matching its methods),
the shared conditioning helper, the registry, and a multimodal model written against the
dict-ready protocol (DESIGN.md section 1) that trains, scores any subset of its modalities,
samples a dict, encodes and round-trips through a run folder."""

import inspect
import math

import pytest
import torch
import yaml
from torch import Tensor, nn

import genlab
from genlab import Capabilities, DataSpec, GenerativeModel
from genlab.checkpoint import save_tensors
from genlab.registry import BUILTIN, get_model_class, model_names

# --- a trivial two-modality model: independent Gaussian "x" and categorical "text" --------------

PAIRS = DataSpec(
    name="pairs",
    kind="multimodal",
    shape=(3,),
    value_range=None,
    vocab=("<pad>", "a", "b", "c", "d"),
    extra={"text_len": 4},
)


@genlab.register("toy-pair")
class ToyPair(GenerativeModel):
    """p(x, text) = N(x; mu, diag sigma^2) * prod_t Cat(text_t; softmax(logits_t)).

    The modalities are independent, so the marginal of any subset is the product of its factors:
    a missing modality is integrated out exactly. ``encode`` gives [B, 3 + scale]: the standardized
    x (0, its prior mean, when x is missing) and the text's mean log-probability per token times
    ``scale`` (its expectation, minus the mean entropy, when text is missing)."""

    likelihood = "exact"
    capabilities = Capabilities(encode=True, modalities=("x", "text"), notes="two independent modalities")

    def __init__(self, spec: DataSpec, scale: int = 1) -> None:
        super().__init__(spec)
        self.d, self.t, self.v, self.scale = spec.shape[0], int(spec.extra["text_len"]), len(spec.vocab), scale
        self.mu = nn.Parameter(torch.zeros(self.d))
        self.log_sigma = nn.Parameter(torch.zeros(self.d))
        self.logits = nn.Parameter(torch.zeros(self.t, self.v))

    def _parts(self, x: dict[str, Tensor]) -> dict[str, Tensor]:
        if not isinstance(x, dict) or not x or set(x) - {"x", "text"}:
            raise ValueError(f"expected a dict of a non-empty subset of 'x', 'text'; got {x!r}")
        return x

    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"loss": -self.log_prob({"x": batch["x"], "text": batch["text"]}).mean()}

    def log_prob(self, x: dict[str, Tensor], cond: Tensor | None = None) -> Tensor:
        parts, lp = self._parts(x), 0
        if "x" in parts:
            z = (parts["x"] - self.mu) * torch.exp(-self.log_sigma)  # (B, D)
            lp = lp - 0.5 * (z * z + math.log(2 * math.pi)).sum(1) - self.log_sigma.sum()
        if "text" in parts:
            logp = self.logits.log_softmax(-1).expand(len(parts["text"]), -1, -1)  # (B, T, V)
            lp = lp + logp.gather(-1, parts["text"].long()[..., None])[..., 0].sum(1)
        return lp

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> dict:
        eps = torch.randn(n, self.d, generator=generator, dtype=self.mu.dtype)
        probs = self.logits.softmax(-1).expand(n, -1, -1).reshape(n * self.t, self.v)
        text = torch.multinomial(probs, 1, generator=generator).view(n, self.t)
        return {"x": self.mu + eps * self.log_sigma.exp(), "text": text}

    def encode(self, x: dict[str, Tensor], cond: Tensor | None = None) -> Tensor:
        parts = self._parts(x)
        b = len(next(iter(parts.values())))
        logp = self.logits.log_softmax(-1)  # (T, V)
        if "x" in parts:
            zx = (parts["x"] - self.mu) * torch.exp(-self.log_sigma)
        else:
            zx = self.mu.new_zeros(b, self.d)
        if "text" in parts:
            zt = logp.expand(b, -1, -1).gather(-1, parts["text"].long()[..., None])[..., 0].mean(1, keepdim=True)
        else:
            zt = (logp.exp() * logp).sum(-1).mean().expand(b, 1)  # E[log p] = -entropy
        return torch.cat([zx, self.scale * zt], 1)


def pair_batch(n: int = 6) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x": torch.randn(n, 3, generator=g, dtype=torch.float64),
        "text": torch.randint(0, 5, (n, 4), generator=g),
    }


SUBSETS = [("x",), ("text",), ("x", "text")]


def test_multimodal_model_trains_scores_samples_and_encodes():
    model = genlab.build_model("toy-pair", PAIRS).double()
    batch = pair_batch()
    loss = model.loss(batch)["loss"]
    assert loss.dim() == 0 and torch.isfinite(loss)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # every parameter is trained
    lps = {s: model.log_prob({k: batch[k] for k in s}) for s in SUBSETS}
    for s, lp in lps.items():
        assert lp.shape == (6,) and torch.isfinite(lp).all(), s
    # independent modalities: the joint is the product of the marginals
    assert torch.allclose(lps[("x", "text")], lps[("x",)] + lps[("text",)])
    for s in SUBSETS:
        z = model.encode({k: batch[k] for k in s})
        assert z.shape == (6, 4) and torch.isfinite(z).all(), s
    with pytest.raises(ValueError, match="non-empty subset"):
        model.log_prob({})
    s = model.sample(5, generator=torch.Generator().manual_seed(1))
    assert isinstance(s, dict) and set(s) == {"x", "text"}
    assert s["x"].shape == (5, 3) and s["text"].shape == (5, 4) and s["text"].dtype == torch.long
    assert 0 <= int(s["text"].min()) and int(s["text"].max()) < 5


def test_multimodal_model_round_trips_through_a_run_folder(tmp_path):
    from genlab.encode import encode_dataset

    model = genlab.build_model("toy-pair", PAIRS, scale=2)  # float32, as load_run builds it
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    config = {"model": "toy-pair", "model_kwargs": model.init_kwargs, "spec": PAIRS.to_dict()}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    save_tensors(model.state_dict(), tmp_path / "model.safetensors")
    twin, cfg, spec = genlab.load_run(tmp_path, weights="last")
    assert type(twin) is ToyPair and twin.scale == 2 and spec == PAIRS and cfg["model"] == "toy-pair"
    batch = pair_batch()
    for s in SUBSETS:
        x = {k: batch[k] for k in s}
        assert torch.equal(model.log_prob(x), twin.log_prob(x))
    # encode_dataset hands a multimodal model the dict of its modalities in the data set
    data = genlab.data.base.TensorDataset(batch, PAIRS)
    assert encode_dataset(twin, data, batch_size=4)["z"].shape == (6, 4)


# --- capabilities as data ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_declared_capabilities_match_the_methods(name):
    """What a family declares is what it implements: the CLI, figures and evaluation trust it."""
    cls = get_model_class(name)
    caps = cls.capabilities
    assert isinstance(caps, Capabilities) and cls.__doc__
    for method in ("sample", "encode", "decode", "reconstruct"):
        if getattr(caps, method):
            assert getattr(cls, method) is not getattr(GenerativeModel, method), f"{name} declares {method}"
    options = inspect.signature(cls.sample).parameters
    assert set(caps.sample_options) <= set(options), caps.sample_options
    if caps.iwae:
        assert "k" in inspect.signature(cls.log_prob).parameters
    if caps.conditional:
        assert "conditional" in inspect.signature(cls.__init__).parameters
    if "samples-mean" in caps.figures:
        assert "mean" in caps.sample_options
    if {"traversal", "interpolation"} & set(caps.figures):
        assert caps.encode and caps.decode
    if "reconstructions" in caps.figures:
        assert caps.reconstruct


def test_capabilities_reject_unknown_names_and_read_as_one_line():
    with pytest.raises(ValueError, match="unknown 'temprature'"):
        Capabilities(sample_options=("temprature",))
    with pytest.raises(ValueError, match="figures"):
        Capabilities(figures=("heatmap-of-everything",))
    line = Capabilities(encode=True, decode=True, sample_options=("temperature",), notes="exact inverse").describe()
    assert line == "sample (temperature), encode, decode; exact inverse"
    assert Capabilities(sample=False).describe() == "none"


# --- the shared conditioning helper ------------------------------------------------------------


class _Cond(GenerativeModel):
    def __init__(self, spec: DataSpec, conditional: bool = False) -> None:
        super().__init__(spec)
        self._init_conditioning(conditional)


def test_conditioning_helper():
    labelled = DataSpec(name="lab", kind="vector", shape=(2,), num_classes=3)
    with pytest.raises(ValueError, match="conditional=True needs class labels; data set 'pairs' has none"):
        _Cond(PAIRS, conditional=True)
    m = _Cond(labelled, conditional=True)
    assert m.conditional and m.c_dim == 3
    ref = torch.zeros(1, dtype=torch.float64)
    c = m.cond_embedding(torch.tensor([2, 0]), ref)
    assert c.dtype == torch.float64 and torch.equal(c, torch.tensor([[0, 0, 1], [1, 0, 0]], dtype=torch.float64))
    soft = torch.full((2, 3), 1 / 3)
    assert torch.equal(m.cond_embedding(soft, ref), soft.double())  # a float condition passes through
    with pytest.raises(ValueError, match="_Cond is conditional: pass cond"):
        m.cond_embedding(None, ref)
    with pytest.raises(ValueError, match="class id out of range"):
        m.cond_embedding(torch.tensor([3]), ref)
    plain = _Cond(labelled)
    assert not plain.conditional and plain.c_dim == 0 and plain.cond_embedding(torch.tensor([1]), ref) is None


# --- the registry ------------------------------------------------------------------------------


def test_registry_names_and_errors():
    assert set(BUILTIN) <= set(model_names()) and "toy-pair" in model_names()
    assert list(genlab.list_models()) == model_names()
    assert get_model_class("vae").registry_name == "vae" and ToyPair.registry_name == "toy-pair"
    expected = "unknown model 'nope'; expected one of: betatcvae, captioner, dcgan, ddpm, factorvae, frozen, glow"
    with pytest.raises(ValueError, match=expected):
        get_model_class("nope")
    with pytest.raises(ValueError, match="'vae' is already registered"):
        genlab.register("vae")(ToyPair)
    genlab.register("toy-pair")(ToyPair)  # the same class again: harmless
    with pytest.raises(ValueError, match="model 'toy-pair' has no option 'z_dim'; valid options: scale"):
        genlab.build_model("toy-pair", PAIRS, z_dim=2)
    with pytest.raises(ValueError, match="model 'toy-pair' option scale='2': expected int"):
        genlab.build_model("toy-pair", PAIRS, scale="2")
