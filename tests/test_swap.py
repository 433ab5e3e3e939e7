"""Latent swap (style transfer) and KL-ordered traversals: the math on stub models whose latents are
known by construction, and ``genlab swap`` end to end on a tiny VAE trained on 16x16 shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from genlab.cli import main
from genlab.data.shapes import (
    CAPTION_VOCAB,
    COLOUR_NAMES,
    REGION_PHRASES,
    SCALE_WORDS,
    SHAPE_NAMES,
    caption_factors,
    decode_caption,
    encode_caption,
    load_shapes,
    load_shapes_captions,
    parse_caption,
)
from genlab.protocol import Capabilities, GenerativeModel
from genlab.registry import build_model
from genlab.swap import attribute_dims, caption_transfer, factor_value, swap_latents
from genlab.viz import latent_kl, latent_order, latent_traversal


@pytest.fixture(scope="module")
def shapes16():
    return load_shapes("train", n=600, size=16)


class FactorCodec(GenerativeModel):
    """Test double: encode returns the data's factors (latent j = factor PERM[j], plus a constant
    latent that carries nothing), so which latent carries which factor is known exactly."""

    capabilities = Capabilities(encode=True, decode=True)
    PERM = (2, 0, 4, 1, 3)

    def __init__(self, spec, factors: Tensor, images: Tensor) -> None:
        super().__init__(spec)
        self.w = nn.Parameter(torch.zeros(1))
        self.factors, self.images = factors, images

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        # look each image up in the data set: its factors are its code
        idx = [int((self.images == xi).flatten(1).all(1).nonzero()[0]) for xi in x]
        f = self.factors[idx].float()[:, list(self.PERM)]
        return torch.cat([f, torch.zeros(len(x), 1)], 1)

    def decode(self, z: Tensor, cond: Tensor | None = None, *, mean: bool = True, generator=None) -> Tensor:
        return z[:, :1, None, None].expand(-1, 1, 16, 16) / 10


def test_swap_no_dims_is_a_reconstruction_and_all_dims_is_b(shapes16):
    torch.manual_seed(0)
    model = build_model("vae", shapes16.spec, z_dim=6).eval()
    a, b = shapes16.tensors["x"][:3], shapes16.tensors["x"][3:6]
    with torch.no_grad():
        rec_a = model.decode(model.encode(a), mean=True)
        rec_b = model.decode(model.encode(b), mean=True)
    assert torch.allclose(swap_latents(model, a, b, []), rec_a, atol=1e-6)
    assert torch.allclose(swap_latents(model, a, b, range(6)), rec_b, atol=1e-6)
    mixed = swap_latents(model, a, b, [1, 4])
    assert mixed.shape == a.shape and not torch.allclose(mixed, rec_a)


def test_swap_rejects_bad_models_and_dims(shapes16):
    model = build_model("vae", shapes16.spec, z_dim=4).eval()
    x = shapes16.tensors["x"][:1]
    with pytest.raises(ValueError, match="z_dim 4") as e:
        swap_latents(model, x, x, [1, 9])
    assert "\n" not in str(e.value)
    made = build_model("made", shapes16.spec)  # encodes, but has no decoder
    with pytest.raises(ValueError, match="cannot swap latents") as e:
        swap_latents(made, x, x, [0])
    assert "\n" not in str(e.value)


def test_attribute_dims_finds_the_latent_of_each_factor(shapes16):
    model = FactorCodec(shapes16.spec, shapes16.tensors["factors"], shapes16.tensors["x"])
    names = shapes16.spec.factor_names
    for j, k in enumerate(FactorCodec.PERM):
        assert attribute_dims(model, shapes16, names[k], top=1, n=300) == [j]
    # the constant latent (5) never carries anything; top=3 with a high threshold keeps only the exact one
    assert attribute_dims(model, shapes16, "scale", top=3, threshold=0.9, n=300) == [
        FactorCodec.PERM.index(names.index("scale"))
    ]
    with pytest.raises(ValueError, match="unknown factor 'colour'.*shape, scale") as e:
        attribute_dims(model, shapes16, "colour")
    assert "\n" not in str(e.value)


class GaussStub(GenerativeModel):
    """Test double with a Gaussian posterior whose coordinates have known spreads: mu_j = s_j * u
    (u a fixed feature of x), logvar_j = log v_j."""

    capabilities = Capabilities(encode=True, decode=True)

    def __init__(self, spec, scale: list[float], var: list[float]) -> None:
        super().__init__(spec)
        self.register_buffer("s", torch.tensor(scale))
        self.register_buffer("v", torch.tensor(var))

    def gauss(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = x.flatten(1).mean(1, keepdim=True) * 10 - 1
        return u * self.s, self.v.log().expand(len(x), -1)

    def posterior(self, x: Tensor, cond: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.gauss(x)

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.gauss(x)[0]

    def decode(self, z: Tensor, cond: Tensor | None = None, *, mean: bool = True, generator=None) -> Tensor:
        return torch.sigmoid(z[:, :1, None, None]).expand(-1, 1, 16, 16)


class MeansOnly(GaussStub):
    posterior = None  # only encode: ranked by the variance of the means


def test_latent_order_follows_kl_and_rows_are_titled(shapes16, tmp_path):
    x = shapes16.tensors["x"][:200]
    scale, var = [0.1, 2.0, 0.0, 1.0], [0.9, 0.1, 1.0, 0.5]
    model = GaussStub(shapes16.spec, scale, var)
    kl, is_kl = latent_kl(model, x)
    mu = model.posterior(x)[0]
    want = 0.5 * (mu.pow(2) + torch.tensor(var) - 1 - torch.tensor(var).log()).mean(0)
    assert is_kl and torch.allclose(kl, want)
    assert latent_order(model, x) == sorted(range(4), key=lambda j: -float(want[j])) == [1, 3, 0, 2]
    assert latent_order(MeansOnly(shapes16.spec, scale, var), x) == [1, 3, 0, 2]  # by |s_j|

    plain = latent_traversal(model, x[:1], tmp_path / "plain.png")
    ranked = latent_traversal(
        model,
        x[:1],
        tmp_path / "ranked.png",
        rank_x=x,
        factors=shapes16.tensors["factors"][:200],
        factor_names=shapes16.spec.factor_names,
    )
    h_plain, h_ranked = Image.open(plain).size[1], Image.open(ranked).size[1]
    assert h_ranked > h_plain  # one caption per row on top of the title


def test_vae_run_figures_traversal_still_written(shapes16, tmp_path):
    from genlab.viz import run_figures

    model = build_model("vae", shapes16.spec, z_dim=4).eval()
    written = run_figures(model, shapes16, tmp_path)
    assert tmp_path / "traversal.png" in written


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae-shapes"
    args = ["train", "vae", "--data", "shapes", "--data-opt", "size=16", "--out", str(out), "--quiet"]
    args += ["--set", "steps=30", "--set", "eval_every=30", "--set", "sample_every=30", "--set", "batch_size=64"]
    args += ["--set", "z_dim=5"]
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def two_images(shapes16, tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    paths = []
    for i in range(2):
        arr = (shapes16.tensors["x"][i, 0].numpy() * 255).astype(np.uint8)
        paths.append(d / f"img{i}.png")
        Image.fromarray(arr).resize((40, 40)).save(paths[-1])  # another size: the CLI resizes it
    return paths


def test_cli_swap_writes_a_titled_row(shapes_run, two_images, tmp_path, capsys):
    a, b = map(str, two_images)
    out = tmp_path / "swap.png"
    assert main(["swap", str(shapes_run), "--a", a, "--b", b, "--dims", "3,1", "--out", str(out)]) == 0
    w, h = Image.open(out).size
    assert w > 3 * 128 and 128 < h < 2 * 128 + 80  # three enlarged 16x16 cells in one row, title and captions
    assert "B's dims 3, 1" in capsys.readouterr().out
    out2 = tmp_path / "attr.png"
    args = ["swap", str(shapes_run), "--a", a, "--b", b, "--attribute", "scale", "--out", str(out2)]
    assert main([*args, "--n-examples", "300"]) == 0
    assert out2.exists() and "carrying 'scale'" in capsys.readouterr().out
    out3 = tmp_path / "value.png"
    args = ["swap", str(shapes_run), "--a", a, "--attribute", "shape=heart", "--out", str(out3), "--n-examples", "300"]
    assert main(args) == 0
    assert out3.exists()
    assert "shape=heart mean's dim" in capsys.readouterr().out
    assert main([*args, "--shift"]) == 0
    assert "A shifted from shape=" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dims", "3,99"], "--dims 3,99: the run has z_dim 5"),
        (["--dims", "a,b"], "--dims a,b: expected comma-separated"),
        (["--attribute", "colour"], "--attribute 'colour': unknown; data set 'shapes' has shape, scale"),
        ([], "swap needs either --dims"),
        (["--dims", "1", "--attribute", "scale"], "swap needs either --dims"),
        (["--attribute", "scale=2"], "give either --b or a value in --attribute 'scale=2', not both"),
        (["--attribute", "shape", "--shift"], "--shift moves A towards a value"),
    ],
)
def test_cli_swap_bad_input_is_one_line(shapes_run, two_images, extra, message, capsys):
    a, b = map(str, two_images)
    assert main(["swap", str(shapes_run), "--a", a, "--b", b, *extra, "--out", "unused.png"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_cli_swap_unreadable_image_and_non_codec_run(shapes_run, two_images, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    assert main(["swap", str(shapes_run), "--a", str(bad), "--b", str(two_images[0]), "--dims", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.png" in err, err
    made_run = tmp_path / "made"
    args = ["train", "made", "--data", "shapes", "--data-opt", "size=16", "--out", str(made_run), "--quiet"]
    assert main([*args, "--set", "steps=2", "--set", "eval_every=2", "--set", "sample_every=2"]) == 0
    assert main(["swap", str(made_run), "--a", str(two_images[0]), "--b", str(two_images[1]), "--dims", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot encode and decode" in err, err


# --- sentences ------------------------------------------------------------------------------------
CAPTION_BLOCKS = (3, 6, 7, 3, 3)  # one-hot blocks: shape, scale, colour, region_x, region_y


class CaptionCodec(GenerativeModel):
    """Test double for a sentence model on captions: the code of a caption is the concatenated
    one-hot vectors of its five captioned factors, and decoding takes each block's argmax, so an
    edit of the colour block changes the colour word and nothing else, by construction."""

    capabilities = Capabilities(encode=True, decode=True)

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.w = nn.Parameter(torch.zeros(1))
        self.data_key = "text"

    def condition(self, batch):
        return batch["text"]

    def encode(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        tokens = cond if x.is_floating_point() else x
        rows = []
        for t in tokens:
            f = parse_caption(decode_caption(t))
            rows.append(torch.cat([nn.functional.one_hot(torch.tensor(f[k]), n) for k, n in zip(f, CAPTION_BLOCKS)]))
        return torch.stack(rows).float()

    def decode(self, z: Tensor, cond: Tensor | None = None, *, mean: bool = True, generator=None) -> Tensor:
        out = []
        for row in z:
            v = [int(block.argmax()) for block in row.split(CAPTION_BLOCKS)]
            words = f"a {SCALE_WORDS[v[1]]} {COLOUR_NAMES[v[2]]} {SHAPE_NAMES[v[0]]} {REGION_PHRASES[(v[4], v[3])]}"
            out.append(torch.from_numpy(encode_caption(words)))
        return torch.stack(out)


@pytest.fixture(scope="module")
def captions():
    return load_shapes_captions("train", n=700, size=8), load_shapes_captions("test", n=120, size=8)


def test_caption_transfer_is_perfect_on_a_factorized_code_and_null_without_an_edit(captions):
    train, test = captions
    model = CaptionCodec(train.spec)
    colour = list(range(9, 16))  # the colour block
    assert sorted(attribute_dims(model, train, "colour", top=7, threshold=0.05, n=700)) == colour
    for mode, dims in (("swap", colour), ("shift", None)):
        r = caption_transfer(model, train, test, "colour", dims, mode=mode, n=120, n_train=700)
        assert r["parsed"] == r["changed"] == r["kept"] == r["success"] == r["reconstructed"] == 1.0, r
        assert r["chance"] == pytest.approx(1 / 6)
    r = caption_transfer(model, train, test, "scale", [], n=120, n_train=700)  # no dims: A unchanged
    assert r["changed"] == r["success"] == 0.0 and r["kept"] == 1.0
    r = caption_transfer(model, train, test, "shape", list(range(3, 9)), n=120, n_train=700)  # the scale block
    assert r["changed"] == 0.0 and r["kept"] < 1.0  # the wrong block moves scale, never shape
    with pytest.raises(ValueError, match="not captioned"):
        caption_transfer(model, train, test, "orientation", n=10)


def test_factor_value_names_and_indices(captions):
    spec = captions[0].spec
    assert factor_value(spec, "colour", "Blue") == COLOUR_NAMES.index("blue")
    assert factor_value(spec, "orientation", "39") == 39
    for factor, value, message in [
        ("colour", "purple", "unknown value 'purple' of factor 'colour'; expected one of red, green"),
        ("orientation", "40", "expected one of 0..39"),
        ("size", "1", "unknown factor 'size'"),
    ]:
        with pytest.raises(ValueError, match=message):
            factor_value(spec, factor, value)


@pytest.fixture(scope="module")
def sentence_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "svae"
    args = ["train", "sentencevae", "--data", "shapes-captions", "--data-opt", "size=8", "--out", str(out)]
    args += ["--quiet", "--set", "source=text", "--set", "steps=20", "--set", "eval_every=20", "--set", "z_dim=4"]
    assert main(args) == 0
    return out


def test_cli_swap_sentences(sentence_run, tmp_path, capsys):
    a, b = "a small red heart in the top left", "a huge green square in the center"
    out = tmp_path / "swap.txt"
    assert main(["swap", str(sentence_run), "--a", a, "--b", b, "--dims", "0,1,2,3", "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert lines[:2] == [f"A: {a}", f"B: {b}"] and lines[2].startswith("A with B's dims 0, 1, 2, 3: ")
    assert capsys.readouterr().out.startswith(f"A: {a}\nB: {b}\n")
    args = ["swap", str(sentence_run), "--a", a, "--attribute", "colour=blue", "--n-examples", "200"]
    assert main([*args, "--shift"]) == 0
    assert "A shifted from colour=" in capsys.readouterr().out
    for extra, message in [
        (["--b", "a small purple heart", "--dims", "1"], "word 'purple' is not in the vocabulary"),
        (["--attribute", "colour=blue", "--out", "x.png"], "--out must name a .txt file (the run models sentences)"),
    ]:
        assert main(["swap", str(sentence_run), "--a", a, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err


def test_token_reconstruction_scores_exact_sentences_and_tokens(captions):
    from genlab.evaluate import token_reconstruction

    train, test = captions
    model = CaptionCodec(train.spec)
    model.reconstruct = lambda x, cond=None: model.decode(model.encode(x, cond))
    assert token_reconstruction(model, test) == {"recon_exact": 1.0, "recon_token_accuracy": 1.0}
    # a reconstruction that always says "red": wrong exactly on the colour word of non-red captions
    red = COLOUR_NAMES.index("red")

    def always_red(x, cond=None):
        z = model.encode(x, cond)
        z[:, 9:16] = 0.0
        z[:, 9 + red] = 1.0
        return model.decode(z)

    model.reconstruct = always_red
    colours = caption_factors(test.tensors["factors"].numpy())[:, 2]
    tokens = int((test.tensors["text"] != CAPTION_VOCAB.index("<pad>")).sum())
    got = token_reconstruction(model, test)
    assert got["recon_exact"] == pytest.approx(float((colours == red).mean()))
    assert got["recon_token_accuracy"] == pytest.approx(1 - int((colours != red).sum()) / tokens)
