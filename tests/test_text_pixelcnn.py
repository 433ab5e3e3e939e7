"""The caption-conditioned PixelCNN (``pixelcnn_text``): exact log p(image | caption) that sums to one
over every image, causality with the caption's spatial map in every layer (by autograd), row-cached
sampling equal to the full pass, brief training that reads the caption, ``translate`` (order, seeds,
greedy) and ``genlab translate``, loud refusals, and the plain PixelCNN's parameters left as they were."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import SPECS

import genlab
from genlab import DataSpec
from genlab.cli import main
from genlab.data import TensorDataset
from genlab.train import TrainConfig


def pairs_spec(shape: tuple[int, int, int], text_len: int = 4, vocab: tuple[str, ...] = tuple("<>abc")) -> DataSpec:
    """Binary images of ``shape`` + captions of ``text_len`` tokens over ``vocab``."""
    txt = DataSpec(
        name="text",
        kind="tokens",
        shape=(text_len,),
        dtype="int64",
        value_range=None,
        levels=len(vocab),
        vocab=tuple(vocab),
    )
    return DataSpec(
        name="tiny-pairs",
        kind="multimodal",
        shape=shape,
        levels=2,
        vocab=tuple(vocab),
        extra={"text_len": text_len},
        modalities={"x": DataSpec(name="x", kind="image", shape=shape, levels=2), "text": txt},
    )


SMALL = dict(channels=6, n_layers=2, first_kernel=3, text_dim=4, text_hidden=5, cond_map=2)


def build(spec: DataSpec, **kw) -> genlab.GenerativeModel:
    torch.manual_seed(0)
    model = genlab.build_model("pixelcnn_text", spec, **{**SMALL, **kw}).double().eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the near-uniform initialisation
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("cond_map", [2, 0])
def test_log_prob_sums_to_one_over_every_image(cond_map):
    spec = pairs_spec((3, 2, 2))
    model = build(spec, cond_map=cond_map)
    images = torch.tensor(list(itertools.product([0.0, 1.0], repeat=12)), dtype=torch.float64).view(-1, 3, 2, 2)
    for caption in ([1, 2, 3, 0], [4, 4, 2, 1]):  # all 4,096 images of 3 x 2 x 2 bits, for two captions
        text = torch.tensor(caption).expand(len(images), -1)
        with torch.no_grad():
            lp = model.log_prob({"x": images, "text": text})
        assert lp.shape == (4096,) and lp.dtype == torch.float64
        assert math.isclose(float(torch.logsumexp(lp, 0)), 0.0, abs_tol=1e-10)


def test_causal_in_raster_order_with_the_map_and_the_caption_reaches_every_sub_pixel():
    spec = pairs_spec((3, 4, 5))
    model = build(spec, channels=12)  # 4 channels per colour group: no R logit whose ReLUs are all off
    c, hgt, wid = spec.shape
    x = torch.rand(3, c, hgt, wid, dtype=torch.float64, requires_grad=True)  # any input, not only levels
    text = torch.tensor([[1, 2, 3, 4], [4, 3, 0, 0], [2, 2, 1, 0]])
    h = model.caption_vector(text).detach().requires_grad_(True)
    s = model.caption_map(h)
    assert s.shape == (3, 2, hgt, wid)
    logits = model.logits(x, h, s)  # (B, L, C, H, W)
    order = lambda k, i, j: (i * wid + j) * c + k  # raster order, R -> G -> B within a pixel
    for i, j, k in itertools.product(range(hgt), range(wid), range(c)):
        gx, gh = torch.autograd.grad(logits[:, :, k, i, j].sum(), [x, h], retain_graph=True)
        later = torch.tensor(
            [[[order(kk, ii, jj) >= order(k, i, j) for jj in range(wid)] for ii in range(hgt)] for kk in range(c)]
        )
        assert torch.equal(gx[:, later], torch.zeros_like(gx[:, later])), (k, i, j)  # exactly zero
        if order(k, i, j) > 0:
            assert gx[:, ~later].abs().sum() > 0, (k, i, j)
        assert gh.abs().sum() > 0, (k, i, j)  # the caption reaches every sub-pixel, the first too
    other = torch.tensor([[2, 2, 2, 2], [1, 1, 3, 0], [3, 3, 3, 3]])
    with torch.no_grad():
        a = model.log_prob({"x": x.detach(), "text": text})
        b = model.log_prob({"x": x.detach(), "text": other})
    assert (a - b).abs().min() > 1e-6  # the caption changes the image's probability


def test_cached_sampling_gives_the_full_logits_and_the_same_draws():
    """translate runs the vertical stack once per row and the horizontal stack on a window of the row
    (reach = 5 // 2 + 2 * (3 // 2) + 1 = 5 < H, W); both must see everything that matters."""
    spec = pairs_spec((3, 9, 11))
    model = build(spec, first_kernel=5, n_layers=2)
    assert model.reach == 5
    x = torch.rand(2, 3, 9, 11, dtype=torch.float64)
    h = model.caption_vector(torch.tensor([[1, 2, 3, 4], [4, 3, 0, 0]]))
    s = model.caption_map(h)
    with torch.no_grad():
        full = model.logits(x, h, s)
        for i in range(9):
            above = model.above(x, i, h, s)
            for j in range(11):
                part = model.pixel_logits(x, i, j, above, h, s)
                assert torch.allclose(part, full[:, :, :, i, j], rtol=0, atol=1e-12), (i, j)
        for greedy in (False, True):
            a = model.draw(2, h, s, generator=torch.Generator().manual_seed(3), greedy=greedy, cached=True)
            b = model.draw(2, h, s, generator=torch.Generator().manual_seed(3), greedy=greedy)
            assert torch.equal(a, b)
    plain = genlab.build_model("pixelcnn", SPECS["rgb16"], gated=False, channels=6, n_layers=1)
    with pytest.raises(ValueError, match="cached sampling needs the gated PixelCNN"):
        plain.draw(1, None, cached=True)


# --- brief training: the caption decides the image ----------------------------------------------

CAPTIONED = pairs_spec((3, 2, 4), vocab=("<pad>", "<bos>", "<eos>", "<unk>", "a", "b", "c", "l", "r"))


def captioned_images(n: int, seed: int) -> TensorDataset:
    """Caption "<bos> colour side <eos>" (colour a/b/c, side l/r) -> the image whose channel ``colour`` is
    on in the left or right half, everything else off: the caption decides the image, which without
    it has log 6 nats of uncertainty."""
    g = torch.Generator().manual_seed(seed)
    colour, side = torch.randint(0, 3, (n,), generator=g), torch.randint(0, 2, (n,), generator=g)
    x = torch.zeros(n, 3, 2, 4)
    for r in range(n):
        x[r, colour[r], :, 2 * side[r] : 2 * side[r] + 2] = 1.0
    text = torch.stack([torch.ones(n, dtype=torch.long), colour + 4, side + 7, torch.full((n,), 2)], 1)
    return TensorDataset({"x": x, "text": text}, CAPTIONED)


def train(data: TensorDataset, out) -> genlab.GenerativeModel:
    # 8 hidden channels per colour group: with fewer, a colour's few ReLUs die now and then at this lr
    torch.manual_seed(0)
    model = genlab.build_model(
        "pixelcnn_text", CAPTIONED, **{**SMALL, "channels": 24, "text_dim": 8, "text_hidden": 16}
    )
    cfg = TrainConfig(steps=200, batch_size=64, lr=1e-2, progress=False, eval_every=0, sample_every=0)
    genlab.Trainer(model, data, None, cfg, out_dir=out).fit()
    return model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train(captioned_images(256, seed=0), tmp_path_factory.mktemp("run") / "run")


def held_out_nll(model: genlab.GenerativeModel, test: TensorDataset) -> float:
    with torch.no_grad():
        return -model.log_prob({"x": test.tensors["x"], "text": test.tensors["text"]}).mean().item()


def test_brief_training_reads_the_caption(trained, tmp_path):
    data, test = captioned_images(256, seed=0), captioned_images(64, seed=1)
    shuffled = TensorDataset({"x": data.tensors["x"], "text": data.tensors["text"][torch.randperm(256)]}, CAPTIONED)
    blind = train(shuffled, tmp_path / "blind")
    nll, nll_blind = held_out_nll(trained, test), held_out_nll(blind, test)
    assert nll_blind > 0.8 * math.log(6), nll_blind  # without the caption: about log 6 nats at best
    assert nll < 0.25 * math.log(6), (nll, nll_blind)
    loaded = genlab.load_run(tmp_path / "blind").model  # a run folder round-trips
    assert math.isclose(held_out_nll(loaded, test), nll_blind, rel_tol=1e-6)


def test_translate_order_seeds_and_greedy(trained):
    test = captioned_images(6, seed=2)
    text = test.tensors["text"]
    greedy = trained.translate({"text": text}, n=3, mean=True)["x"]
    assert greedy.shape == (18, 3, 2, 4) and set(greedy.unique().tolist()) <= {0.0, 1.0}
    # example-major: rows 3i .. 3i + 2 are caption i's, and a trained model draws what the caption says
    assert torch.equal(greedy, test.tensors["x"].repeat_interleave(3, 0))
    assert torch.equal(trained.translate({"text": text}, ["x"], n=3, mean=True)["x"], greedy)  # deterministic
    a = trained.translate({"text": text}, n=2, generator=torch.Generator().manual_seed(5))["x"]
    b = trained.translate({"text": text}, n=2, generator=torch.Generator().manual_seed(5))["x"]
    assert a.shape == (12, 3, 2, 4) and torch.equal(a, b)  # same seed, same images
    model = build(CAPTIONED)  # untrained: drawn images differ between seeds; each caption's rows its own
    one = model.translate({"text": text[:2]}, n=2, mean=True)["x"]
    assert torch.equal(one[2:], model.translate({"text": text[1:2]}, n=2, mean=True)["x"])
    c = model.translate({"text": text}, n=4, generator=torch.Generator().manual_seed(5))["x"]
    d = model.translate({"text": text}, n=4, generator=torch.Generator().manual_seed(6))["x"]
    assert not torch.equal(c, d)


def test_refusals_are_one_line(trained):
    model, data = trained, captioned_images(4, seed=3)
    x, text = data.tensors["x"], data.tensors["text"]
    cases = [
        (NotImplementedError, "translate", lambda: model.sample(2)),
        (NotImplementedError, "no encoder", lambda: model.encode({"x": x, "text": text})),
        (ValueError, "given=\\['text'\\]", lambda: model.log_prob({"x": x, "text": text}, given=["x"])),
        (ValueError, "scores images given captions", lambda: model.log_prob({"x": x})),
        (ValueError, "captions to images only", lambda: model.translate({"x": x})),
        (ValueError, "captions to images only", lambda: model.translate({"text": text}, ["text"])),
        (ValueError, "n=0", lambda: model.translate({"text": text}, n=0)),
        (ValueError, "temperature", lambda: model.translate({"text": text}, temperature=0.0)),
        (ValueError, "token ids long", lambda: model.translate({"text": text.float()})),
        (KeyError, "'text'", lambda: model.loss({"x": x})),
        (
            ValueError,
            "got 4, 5, -1",
            lambda: genlab.build_model("pixelcnn_text", CAPTIONED, text_dim=4, text_hidden=5, cond_map=-1),
        ),
        (
            ValueError,
            "odd kernels; got 32, 5, 4, 7",
            lambda: genlab.build_model("pixelcnn_text", CAPTIONED, kernel_size=4),
        ),
        (ValueError, "conditional=True", lambda: genlab.build_model("pixelcnn_text", SPECS["pairs"], conditional=True)),
        (ValueError, "'bin-img'", lambda: genlab.build_model("pixelcnn_text", SPECS["bin-img"])),
    ]
    for err, needle, call in cases:
        with pytest.raises(err, match=needle) as info:
            call()
        assert "\n" not in str(info.value), str(info.value)


def test_translate_and_sample_through_the_cli(trained, tmp_path, capsys):
    run = str(tmp_path / "run")
    data = captioned_images(64, seed=0)
    model = genlab.build_model("pixelcnn_text", CAPTIONED, **SMALL)
    cfg = TrainConfig(steps=2, batch_size=16, progress=False, eval_every=0, sample_every=0)
    genlab.Trainer(model, data, None, cfg, out_dir=run).fit()
    out = tmp_path / "images.png"
    assert main(["translate", run, "--text", "a l", "--n", "3", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    capsys.readouterr()
    assert main(["sample", run]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot sample" in err and "\n" not in err


# --- the plain PixelCNN is untouched ------------------------------------------------------------

LAYER_KEYS = ["v.weight", "v.bias", "v.mask", "h.weight", "h.bias", "h.mask", "v2h.weight", "v2h.bias"]
LAYER_KEYS += ["h_out.weight", "h_out.bias", "h_out.mask"]
HEAD_KEYS = [f"head.{i}.{p}" for i in (1, 3) for p in ("weight", "bias", "mask")]


@pytest.mark.parametrize("conditional", [False, True])
def test_pixelcnn_keeps_its_parameters(conditional):
    """The spatial map is an extra of GatedLayer: the plain and class-conditional PixelCNN have exactly
    the state-dict keys they had before it (runs saved then load), and no map."""
    spec = SPECS["bin-img"]
    gated = genlab.build_model("pixelcnn", spec, n_layers=1, conditional=conditional)
    cond = ["cond.weight"] if conditional else []
    want = [f"layers.{i}.{k}" for i in range(2) for k in LAYER_KEYS + cond] + HEAD_KEYS
    assert sorted(gated.state_dict()) == sorted(want)
    plain = genlab.build_model("pixelcnn", spec, gated=False, n_layers=1, conditional=conditional)
    want = [f"{m}.{p}" for m in ("first", "layers.0") for p in ("weight", "bias", "mask")] + HEAD_KEYS
    want += [f"cond.{i}.weight" for i in range(2)] if conditional else []
    assert sorted(plain.state_dict()) == sorted(want)
    assert gated.n_map == 0 and all(layer.cond_map is None for layer in gated.layers)


def test_a_zero_map_is_the_global_bias_path():
    """With every map weight zero, the map-conditioned net computes what the global-bias-only net with
    the same weights does (the PixelCNN's class-conditional path, here with the caption vector)."""
    spec = pairs_spec((3, 4, 5))
    with_map, without = build(spec, cond_map=2), build(spec, cond_map=0)
    with torch.no_grad():
        for layer in with_map.layers:
            layer.cond_map.weight.zero_()
    missing, unexpected = without.load_state_dict(with_map.state_dict(), strict=False)
    assert not missing and sorted(unexpected) == sorted(
        [f"layers.{i}.cond_map.weight" for i in range(3)] + ["to_map.weight", "to_map.bias"]
    )
    x = torch.randint(0, 2, (3, 3, 4, 5)).double()
    text = torch.tensor([[1, 2, 3, 4], [4, 3, 0, 0], [2, 2, 2, 2]])
    with torch.no_grad():
        a, b = with_map(x, text), without(x, text)
        h = without.caption_vector(text)
        c = genlab.models.pixelcnn.PixelCNN.logits(without, x, h)  # the shared network, no map
        blind = without.logits(x, torch.zeros_like(h))
    assert torch.allclose(a, b, rtol=0, atol=1e-12) and torch.equal(b, c)
    assert not torch.allclose(a, blind)  # the caption matters
