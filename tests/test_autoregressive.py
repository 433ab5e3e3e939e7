"""Mathematical properties of the autoregressive family (MADE, PixelCNN, transformer, WaveNet):
normalization on tiny discrete spaces, causal masks by autograd and by perturbation, samples that
follow log_prob, and cached sampling equal to naive sampling. Tiny float64 models, fixed seeds."""

import itertools
import math

import pytest
import torch

import genlab
from genlab import DataSpec
from genlab.data.audio import load_tones, mu_law_decode, mu_law_encode, read_wav, write_wav
from genlab.data.text import tokens_to_text
from genlab.distributions import sample_categorical


def build(name, spec, **kw):
    torch.manual_seed(0)
    return genlab.build_model(name, spec, **kw).double().eval()


def all_points(shape, levels, lo=0.0, hi=1.0):
    """Every point of {levels}^shape on the grid lo..hi, as [L^D, *shape] float64."""
    d = math.prod(shape)
    ids = torch.tensor(list(itertools.product(range(levels), repeat=d)), dtype=torch.float64)
    return (lo + ids / (levels - 1) * (hi - lo)).view(-1, *shape)


BIN6 = DataSpec(name="bin6", kind="vector", shape=(6,), levels=2, num_classes=2)
IMG3 = DataSpec(name="img3", kind="image", shape=(1, 2, 2), levels=3, num_classes=2)
RGB3 = DataSpec(name="rgb3", kind="image", shape=(3, 1, 2), levels=3, num_classes=2)
TOK = DataSpec(
    name="tok",
    kind="tokens",
    shape=(4,),
    dtype="int64",
    value_range=None,
    levels=3,
    vocab=("a", "b", "c"),
    num_classes=2,
)
AUD3 = DataSpec(name="aud3", kind="audio", shape=(4,), value_range=(-1.0, 1.0), levels=3, num_classes=2)

SMALL = {
    "made": dict(hidden=[10, 10]),
    "pixelcnn": dict(channels=6, n_layers=2, first_kernel=3),
    "transformer": dict(d_model=8, n_layers=2, n_heads=2),
    "wavenet": dict(channels=4, skip_channels=6, layers_per_stack=2, stacks=2),
}
NORMALIZATION = [
    ("made", BIN6, {}),
    ("made", BIN6, {"order_agnostic": True, "num_masks": 3}),
    ("pixelcnn", IMG3, {"gated": True}),
    ("pixelcnn", IMG3, {"gated": False}),
    ("pixelcnn", RGB3, {"gated": True}),
    ("pixelcnn", RGB3, {"gated": False}),
    ("transformer", TOK, {}),
    ("wavenet", AUD3, {}),
]


@pytest.mark.parametrize("name,spec,kw", NORMALIZATION, ids=lambda v: str(v) if not isinstance(v, DataSpec) else v.name)
@pytest.mark.parametrize("conditional", [False, True])
def test_probabilities_sum_to_one(name, spec, kw, conditional):
    model = build(name, spec, conditional=conditional, **SMALL[name], **kw)
    if spec.kind == "tokens":
        x = torch.tensor(list(itertools.product(range(3), repeat=4)))
    else:
        x = all_points(spec.shape, spec.levels, *(spec.value_range or (0.0, 1.0)))
    cond = torch.ones(len(x), dtype=torch.long) if conditional else None
    lp = model.log_prob(x, cond)
    assert lp.shape == (len(x),)
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-10)


def test_transformer_prefix_gives_a_distribution():
    model = build("transformer", TOK, **SMALL["transformer"])
    x = torch.tensor(list(itertools.product(range(3), repeat=4)))
    prefix = torch.randn(1, 3, 8, dtype=torch.float64).expand(len(x), 3, 8)
    lp = model.log_prob(x, prefix_embeds=prefix)
    assert torch.logsumexp(lp, 0).item() == pytest.approx(0.0, abs=1e-10)
    assert not torch.allclose(lp, model.log_prob(x))  # the prefix changes the distribution


@pytest.mark.parametrize(
    "name,spec,kw", [NORMALIZATION[0], NORMALIZATION[2], NORMALIZATION[3]], ids=["made", "pixelcnn-gated", "pixelcnn"]
)
def test_samples_follow_log_prob(name, spec, kw):
    model = build(name, spec, **SMALL[name], **kw)
    x = all_points(spec.shape, spec.levels)
    p = model.log_prob(x).exp()
    s = model.sample(20000, generator=torch.Generator().manual_seed(0))
    ids = torch.round(s.flatten(1) * (spec.levels - 1)).long()
    code = (ids * spec.levels ** torch.arange(ids.shape[1] - 1, -1, -1)).sum(1)  # matches all_points order
    freq = torch.bincount(code, minlength=len(x)).double() / len(s)
    assert (freq - p).abs().max() < 4 * math.sqrt(0.25 / len(s))


def dependence(fn, x, n_out):
    """dep[s, t] = 1 if output s's logits have a non-zero gradient w.r.t. input t at any of the
    random inputs x [R, *shape] (ReLUs can hide a path at one point, never create one). ``fn``
    maps [N, *shape] -> logits [N, n_out, L]; one backward pass per input via n_out copies."""
    dep = torch.zeros(n_out, x[0].numel(), dtype=torch.bool)
    for xr in x:
        xi = xr.expand(n_out, *xr.shape).clone().requires_grad_(True)
        out = fn(xi)  # (n_out, n_out, L): copy s contributes only its output s
        (g,) = torch.autograd.grad(out[torch.arange(n_out), torch.arange(n_out)].sum(), xi)
        dep |= g.flatten(1) != 0
    return dep


def test_made_masks_by_autograd():
    spec = DataSpec(name="v5", kind="vector", shape=(5,), levels=3)
    model = build("made", spec, hidden=[12, 12], order_agnostic=True, num_masks=3)
    x = torch.rand(3, 5, dtype=torch.float64)
    for k in range(3):
        model._use_mask(k)
        dep = dependence(lambda xi: model(xi).transpose(1, 2), x, 5)  # (D outputs, D inputs)
        order = model.orders[k]
        earlier = order[None, :] < order[:, None]  # input t comes before output s
        assert not (dep & ~earlier).any()  # nothing at or after s in the ordering
        assert dep[order.argmax()].any()  # and the last dimension does see the past


def _pixel_dep(model, shape):
    c, h, w = shape
    x = torch.rand(3, *shape, dtype=torch.float64)
    perm = [k + c * (j + w * i) for k in range(c) for i in range(h) for j in range(w)]  # (k,i,j) -> raster

    def fn(xi):  # logits (N, D, L) in the channel-major flat order of the tensor
        return model(xi).flatten(2).transpose(1, 2)

    dep = dependence(fn, x, c * h * w)
    p = torch.tensor(perm)
    out = torch.zeros_like(dep)
    out[p[:, None], p[None, :]] = dep  # reorder rows and columns to raster order (pixel, then R, G, B)
    return out


@pytest.mark.parametrize("shape", [(1, 5, 5), (3, 3, 3)])
def test_pixelcnn_masks_and_blind_spot(shape):
    strictly_earlier = torch.ones(math.prod(shape), math.prod(shape), dtype=torch.bool).tril(-1)
    gated = build(
        "pixelcnn", DataSpec(name="i", kind="image", shape=shape, levels=3), channels=12, n_layers=4, first_kernel=3
    )
    plain = build(
        "pixelcnn",
        DataSpec(name="i", kind="image", shape=shape, levels=3),
        gated=False,
        channels=12,
        n_layers=4,
        first_kernel=3,
    )
    dep_g, dep_p = _pixel_dep(gated, shape), _pixel_dep(plain, shape)
    assert not (dep_g & ~strictly_earlier).any() and not (dep_p & ~strictly_earlier).any()
    assert torch.equal(dep_g, strictly_earlier)  # gated: sees every earlier sub-pixel, no blind spot
    assert (strictly_earlier & ~dep_p).any()  # the plain stack of 3x3 masks has a blind spot


def test_transformer_causal_by_autograd_and_perturbation():
    model = build("transformer", TOK, **SMALL["transformer"])
    x = torch.randint(0, 3, (2, 4))
    pre = model._prefix(2, None, None)
    emb = model.tok_emb(x[:, :-1]).detach().requires_grad_(True)  # inputs x_1..x_{T-1}
    logits = model.head(model._run(torch.cat([pre, emb], 1)))[:, 1:]  # predictions of x_2..x_T
    for s in range(3):  # logits of x_{s+2} depend on inputs x_1..x_{s+1} only
        (g,) = torch.autograd.grad(logits[:, s].sum(), emb, retain_graph=True)
        assert (g[:, s + 1 :] == 0).all() and (g[:, : s + 1] != 0).any(-1).all()
    base = model(x)
    for t in range(4):  # changing x_t changes no p(x_s | x_<s) for s <= t
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % 3
        assert torch.equal(model(y)[:, : t + 1], base[:, : t + 1])


def test_wavenet_causal_by_perturbation():
    spec = DataSpec(name="a", kind="audio", shape=(20,), value_range=(-1.0, 1.0))
    model = build("wavenet", spec, **SMALL["wavenet"])
    x = torch.rand(2, 20, dtype=torch.float64) * 2 - 1
    base = model(x)
    for t in (0, 7, 19):
        y = x.clone()
        y[:, t] = -y[:, t]
        assert torch.equal(model(y)[:, : t + 1], base[:, : t + 1])
        assert not torch.equal(model(y)[:, t + 1 : t + 2], base[:, t + 1 : t + 2]) or t == 19


@pytest.mark.parametrize(
    "kw", [{}, {"temperature": 0.7, "top_k": 2}, {"top_p": 0.6}, {"prefix": True, "conditional": True}]
)
def test_transformer_kv_cache_equals_naive(kw):
    kw = dict(kw)
    spec = DataSpec(
        name="tok",
        kind="tokens",
        shape=(12,),
        dtype="int64",
        value_range=None,
        levels=5,
        vocab=tuple("abcde"),
        num_classes=2,
    )
    model = build("transformer", spec, d_model=8, n_layers=2, n_heads=2, conditional=kw.pop("conditional", False))
    opts = {"cond": torch.arange(16) % 2} if model.conditional else {}
    if kw.pop("prefix", False):
        opts["prefix_embeds"] = torch.randn(16, 3, 8, dtype=torch.float64)
    a = model.sample(16, generator=torch.Generator().manual_seed(1), **opts, **kw)
    b = model.sample(16, generator=torch.Generator().manual_seed(1), use_cache=False, **opts, **kw)
    assert a.shape == (16, 12) and a.dtype == torch.long and torch.equal(a, b)


@pytest.mark.parametrize("conditional", [False, True])
def test_wavenet_queue_cache_equals_naive(conditional):
    spec = DataSpec(name="a", kind="audio", shape=(40,), value_range=(-1.0, 1.0), num_classes=2)
    model = build("wavenet", spec, channels=4, skip_channels=6, layers_per_stack=3, stacks=2, conditional=conditional)
    assert model.receptive_field == 1 + 2 * (1 + 2 + 4)
    cond = torch.arange(8) % 2 if conditional else None
    a = model.sample(8, cond, generator=torch.Generator().manual_seed(2))
    b = model.sample(8, cond, generator=torch.Generator().manual_seed(2), use_cache=False)
    assert torch.equal(a, b) and a.abs().max() <= 1
    assert torch.equal(mu_law_decode(mu_law_encode(a), dtype=a.dtype), a)  # on the mu-law grid


def test_sample_categorical_truncation():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)).expand(4000, 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_categorical(logits, g, top_k=1), torch.zeros(4000, dtype=torch.long))
    top_p = torch.bincount(sample_categorical(logits, g, top_p=0.75), minlength=4)  # nucleus {0, 1}
    assert top_p[2:].sum() == 0 and abs(top_p[0] / 4000 - 0.5 / 0.8) < 0.03
    top_k = torch.bincount(sample_categorical(logits, g, top_k=3), minlength=4)
    assert top_k[3] == 0 and abs(top_k[2] / 4000 - 0.15 / 0.95) < 0.03


def test_mu_law_and_wav_round_trip(tmp_path):
    q = torch.arange(256)
    assert torch.equal(mu_law_encode(mu_law_decode(q)), q)
    s = torch.linspace(-1, 1, 1001)
    assert (mu_law_decode(mu_law_encode(s)) - s).abs().max() < 0.025  # steps are coarse only near +-1
    path = write_wav(tmp_path / "a.wav", s[None].repeat(2, 1), sample_rate=8000, gap=0.01)
    audio, rate = read_wav(path)
    assert rate == 8000 and len(audio) == 2 * (1001 + 80) and abs(audio[:1001] - s.numpy()).max() < 1e-4


def test_tones_data_set():
    ds = load_tones("val", n=4, length=300)
    x = ds.tensors["x"]
    assert x.shape == (4, 300) and ds.spec.kind == "audio" and ds.spec.extra["sample_rate"] == 4000
    assert torch.equal(mu_law_decode(mu_law_encode(x)), x) and x.std() > 0.05
    assert not torch.equal(x, load_tones("test", n=4, length=300).tensors["x"])
    assert "tones" in genlab.list_datasets()


def test_transformer_on_captions_and_text_decoding():
    spec = DataSpec(
        name="cap",
        kind="multimodal",
        shape=(3, 4, 4),
        levels=2,
        vocab=("<pad>", "<bos>", "<eos>", "<unk>", "a", "red", "heart"),
        extra={"text_len": 6},
    )
    model = build("transformer", spec, source="text", **SMALL["transformer"])
    text = torch.tensor([[1, 4, 5, 6, 2, 0], [1, 4, 6, 2, 0, 0]])
    batch = {"x": torch.rand(2, 3, 4, 4, dtype=torch.float64), "text": text}
    assert torch.isfinite(model.loss(batch)["loss"])
    lp = model.log_prob(batch["x"], model.condition(batch))  # what the trainer's validation calls
    assert torch.equal(lp, model.log_prob(text))
    assert tokens_to_text(text, spec) == ["a red heart", "a heart"]
    with pytest.raises(ValueError, match="source"):
        genlab.build_model("transformer", spec)
