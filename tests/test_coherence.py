"""Cross-modal coherence (genlab.metrics.coherence): the array core on data with known values, the
factor readers, and the model-driving function on two test doubles -- an oracle that translates
perfectly with the data set's own renderers (coherence 1) and a translator that ignores its source
(coherence at chance)."""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Sequence

import numpy as np
import pytest
import torch

import genlab
from genlab import Capabilities, GenerativeModel, load_dataset
from genlab.data import shapes as S
from genlab.data import shapes_av as A
from genlab.evaluate import applicable_metrics
from genlab.metrics.coherence import (
    FactorReader,
    coherence,
    cross_modal_coherence,
    factor_readers,
    flatten_coherence,
    image_reader_features,
    joint_coherence,
    true_factors,
)

# --- the array core ---------------------------------------------------------------------------------


def test_coherence_known_values() -> None:
    true = np.array([[0, 1], [1, 1], [2, 0], [0, 0]])
    pred = np.array([[0, 1], [1, 0], [2, 0], [-1, 0]])  # row 1 wrong on factor b, row 3 unreadable on a
    r = coherence(pred, true, factor_names=["a", "b"], factor_sizes=[3, 2])
    assert r["coherence"] == 0.5 and r["per_factor"] == {"a": 0.75, "b": 0.75}
    assert r["factors"] == ["a", "b"] and r["n"] == 4 and r["chance_uniform"] == pytest.approx(1 / 6)
    assert r["readable"] == 0.75
    # chance: the same outputs against every other source (all pairs i != j), by brute force
    pairs = [(i, j) for i, j in itertools.permutations(range(4), 2)]
    brute = np.mean([bool((pred[i] == true[j]).all() and (pred[i] >= 0).all()) for i, j in pairs])
    assert r["chance"] == pytest.approx(brute)
    brute_a = np.mean([pred[i, 0] == true[j, 0] and pred[i, 0] >= 0 for i, j in pairs])
    assert r["chance_per_factor"]["a"] == pytest.approx(brute_a)
    # tensors and a single factor [N] work alike; unreadable never matches, not even unreadable
    one = coherence(torch.tensor([1, -1, 2]), torch.tensor([1, -1, 0]))
    assert one["coherence"] == pytest.approx(1 / 3) and one["factors"] == ["factor0"]
    assert coherence(true, true)["coherence"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        coherence(pred, true[:3])
    with pytest.raises(ValueError, match="integer"):
        coherence(pred + 0.5, true)


def test_chance_is_what_a_source_ignoring_translator_scores() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, [3, 6, 7], size=(4000, 3))
    perfect = coherence(true, true, factor_sizes=[3, 6, 7])
    assert perfect["coherence"] == 1.0
    assert perfect["chance"] == pytest.approx(1 / 126, rel=0.15)  # uniform data: chance = prod 1/size
    # A translator whose outputs ignore the source: coherence ~ its chance; and outputs always "0"
    # score the data's frequency of 0 on each factor, whatever the uniform figure says.
    random_out = coherence(rng.integers(0, [3, 6, 7], size=(4000, 3)), true, factor_sizes=[3, 6, 7])
    assert abs(random_out["coherence"] - random_out["chance"]) < 0.01
    const = coherence(np.zeros_like(true), true)
    for i, name in enumerate(const["per_factor"]):
        assert const["per_factor"][name] == pytest.approx(const["chance_per_factor"][name], abs=1e-3)
        assert const["per_factor"][name] == pytest.approx((true[:, i] == 0).mean())


def test_joint_coherence_known_values() -> None:
    a = np.array([[0, 1, 2], [1, 1, 1], [2, 2, 2], [0, 0, 0]])  # factors p, q, r
    b = np.array([[0, 1], [1, 0], [2, 2], [-1, 0]])  # factors p, q
    c = np.array([[2], [1], [0], [0]])  # factor r
    two = joint_coherence({"a": a, "b": b}, {"a": "pqr", "b": "pq"})
    assert two["coherence"] == 0.5 and two["factors"] == ["p", "q"]
    assert two["chance"] == two["pairs"]["a+b"]["chance"]
    three = joint_coherence({"a": a, "b": b, "c": c}, {"a": "pqr", "b": "pq", "c": "r"})
    assert three["factors"] == ["p", "q", "r"] and set(three["pairs"]) == {"a+b", "a+c"}  # b, c share nothing
    assert three["coherence"] == 0.25  # row 0 alone: p, q agree between a and b, r between a and c
    assert three["pairs"]["a+c"]["coherence"] == 0.75
    with pytest.raises(ValueError, match="no factor in common"):
        joint_coherence({"b": b, "c": c}, {"b": "pq", "c": "r"})


# --- test doubles: an oracle and a source-ignoring translator ------------------------------------------

_BINS = ((0, 11), (11, 21), (21, 32))  # position indices of each region (genlab.data.shapes.position_bin)


class Renderer(GenerativeModel):
    """Translates and samples with the data set's own renderers: it reads the sources with the exact
    readers (captions, audio) or by looking the image up, then renders the targets from the factors
    found, drawing what the sources do not determine (orientation, exact position, region_y from
    audio). ``ignore_source``: draws every factor at random instead (a translator at chance)."""

    def __init__(self, spec: genlab.DataSpec, images: dict[bytes, np.ndarray], ignore_source: bool = False) -> None:
        super().__init__(spec)
        self.capabilities = Capabilities(modalities=spec.modality_keys)
        self.images = images  # image bytes -> captioned factors: what the image "reader" knows
        self.ignore_source = ignore_source

    def _render(self, cap: np.ndarray, keys: Sequence[str], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        cap = np.where(cap < 0, rng.integers(0, S.CAPTION_FACTOR_SIZES, size=cap.shape), cap)
        shape, scale, colour, rx, ry = cap.T
        pos = [np.array([rng.integers(*_BINS[b]) for b in r]) for r in (rx, ry)]
        full = np.stack([shape, scale, rng.integers(0, 40, len(cap)), pos[0], pos[1], colour], 1)
        out = {
            "x": torch.from_numpy(S.render_coloured(full, self.spec.shape[-1])),
            "text": torch.from_numpy(S.caption_tokens(full)),
            "audio": torch.from_numpy(A.synth_audio(full)) if "audio" in keys else None,
        }
        for img, row in zip(out["x"].numpy(), cap):
            self.images.setdefault(img.tobytes(), row)
        return {k: out[k] for k in keys}

    def translate(self, source, targets=None, *, n=1, generator=None, mean=False):
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
        b = len(next(iter(source.values())))
        cap = np.full((b, 5), -1)
        if not self.ignore_source:
            for key, value in source.items():
                if key == "x":
                    cap = np.stack([self.images[img.tobytes()] for img in value.float().numpy()])
                elif key == "text":
                    cap = np.stack(
                        [[S.parse_caption(S.decode_caption(r))[f] for f in S.CAPTION_FACTOR_NAMES] for r in value]
                    )
                elif key == "audio":
                    cap[:, :4] = A.decode_audio_batch(value)
        targets = [k for k in self.capabilities.modalities if k not in source] if targets is None else targets
        return self._render(np.repeat(cap, n, axis=0), targets, rng)

    def sample(self, n, cond=None, *, generator=None, mean=False):
        rng = np.random.default_rng(int(torch.randint(2**31, (1,), generator=generator)))
        return self._render(np.full((n, 5), -1), self.capabilities.modalities, rng)


def lookup_readers(spec: genlab.DataSpec, images: dict[bytes, np.ndarray]) -> dict[str, FactorReader]:
    """The built-in readers of text and audio (exact), and a perfect image reader by lookup."""
    readers = factor_readers(spec)  # no training split: the built-in image reader is never asked
    lookup = FactorReader(
        "x",
        S.CAPTION_FACTOR_NAMES,
        S.CAPTION_FACTOR_SIZES,
        lambda x: np.stack([images[i.tobytes()] for i in x.numpy()]),
    )
    return {**readers, "x": lookup}


@pytest.fixture(scope="module")
def av() -> genlab.data.TensorDataset:
    return load_dataset("shapes-av", "test", n=300)


def _known_images(data: genlab.data.TensorDataset) -> dict[bytes, np.ndarray]:
    return {img.tobytes(): row for img, row in zip(data.tensors["x"].numpy(), true_factors(data.tensors["factors"]))}


def test_oracle_scores_one_everywhere(av) -> None:
    images = _known_images(av)
    oracle = Renderer(av.spec, images)
    res = cross_modal_coherence(oracle, av, readers=lookup_readers(av.spec, images), n_examples=200, n_per_source=2)
    keys = ("x", "text", "audio")
    singles = {f"{s}->{t}" for s, t in itertools.permutations(keys, 2)}
    several = {"x+text->audio", "x+audio->text", "text+audio->x"}
    assert set(res["directions"]) == singles | several
    for name, d in res["directions"].items():
        assert d["coherence"] == 1.0, name
        assert d["n"] == 400 and d["chance"] < 0.01 and d["readable"] == 1.0
    # compared: the factors the target and a source both determine (audio has no vertical region)
    assert res["directions"]["text->x"]["factors"] == list(S.CAPTION_FACTOR_NAMES)
    assert res["directions"]["audio->x"]["factors"] == list(A.AUDIO_FACTOR_NAMES)
    assert res["directions"]["x->audio"]["factors"] == list(A.AUDIO_FACTOR_NAMES)
    assert res["directions"]["text+audio->x"]["factors"] == list(S.CAPTION_FACTOR_NAMES)
    assert res["joint"]["coherence"] == 1.0 and set(res["joint"]["pairs"]) == {"x+text", "x+audio", "text+audio"}
    assert all(d["coherence"] == 1.0 for d in res["reader_accuracy"].values())
    flat = flatten_coherence(res)
    assert flat["coherence/text->x"] == 1.0 and flat["coherence/text->x/colour"] == 1.0
    assert flat["factors/audio->x"] == "shape,scale,colour,region_x" and "chance/text+audio->x" in flat
    assert flat["coherence/joint"] == 1.0 and "chance/joint/x+text" in flat and flat["reader_accuracy/audio"] == 1.0
    assert flat["coherence_examples"] == 200 and flat["coherence_per_source"] == 2


def test_source_ignoring_translator_scores_chance(av) -> None:
    images = _known_images(av)
    blind = Renderer(av.spec, images, ignore_source=True)
    res = cross_modal_coherence(blind, av, readers=lookup_readers(av.spec, images), n_examples=300, n_per_source=4)
    for name, d in res["directions"].items():
        for f, v in d["per_factor"].items():  # 1,200 translations per direction: +-0.04 at p = 1/3
            assert abs(v - d["chance_per_factor"][f]) < 0.05, (name, f)
            assert v < 0.45
        assert d["coherence"] < 0.02 and d["chance"] < 0.02
    # jointly "created" samples are still rendered from one set of factors: they agree
    assert res["joint"]["coherence"] == 1.0 and res["joint"]["chance"] < 0.02


def test_coherence_refuses_what_it_cannot_measure(av) -> None:
    vae = genlab.build_model("vae", av.spec, z_dim=2, hidden=[8], channels=4)
    with pytest.raises(ValueError, match="multimodal model"):
        cross_modal_coherence(vae, av)
    no_factors = genlab.data.TensorDataset({k: v for k, v in av.tensors.items() if k != "factors"}, av.spec, "test")
    with pytest.raises(ValueError, match="ground-truth factors"):
        cross_modal_coherence(Renderer(av.spec, {}), no_factors)
    with pytest.raises(ValueError, match="training split"):
        factor_readers(av.spec)["x"].read(av.tensors["x"][:2])


# --- the image reader ---------------------------------------------------------------------------------


def test_image_reader_features_ignore_position_and_stray_pixels() -> None:
    data = load_dataset("shapes-captions", "test", n=64)
    x = data.tensors["x"]
    f = image_reader_features(x)
    assert f.shape == (64, 16) and torch.isfinite(f).all()
    # the same shape moved by whole pixels: only the centroid features (11, 12) change
    moved = torch.roll(x, shifts=(2, -3), dims=(2, 3))
    inside = (
        (x[:, :, :3].sum((1, 2, 3)) == 0) & (x[:, :, :, -4:].sum((1, 2, 3)) == 0) & (x[:, :, :, :1].sum((1, 2, 3)) == 0)
    )
    g = image_reader_features(moved)
    keep = [i for i in range(16) if i not in (11, 12)]
    assert torch.allclose(f[inside][:, keep], g[inside][:, keep], atol=1e-4)
    # a stray pixel far from the object moves the crop by at most a pixel: the same features again
    far = x[:, :, :12].sum((1, 2, 3)).eq(0) & x[:, :, :, :12].sum((1, 2, 3)).eq(0)
    stray = x.clone()
    stray[:, :, 0, 0] = 1.0
    assert far.sum() >= 3
    assert torch.allclose(f[far][:, keep], image_reader_features(stray)[far][:, keep], atol=1e-4)
    # a blank image and a NaN image still get finite features
    assert torch.isfinite(image_reader_features(torch.zeros(2, 3, 32, 32))).all()
    assert torch.isfinite(image_reader_features(torch.full((1, 3, 32, 32), float("nan")))).all()


@pytest.mark.slow  # trains the image reader (~10 s on one thread)
def test_image_reader_accuracy_on_real_test_images() -> None:
    train, test = load_dataset("shapes-captions", "train"), load_dataset("shapes-captions", "test")
    reader = factor_readers(train.spec, train, cache=False)["x"]
    start = time.perf_counter()
    pred = reader.read(test.tensors["x"][:8])  # the first read trains it
    seconds = time.perf_counter() - start
    assert pred.shape == (8, 5) and seconds < 40  # ~10 s alone on one core; shared CI machines are slower
    acc = coherence(
        reader.read(test.tensors["x"]), true_factors(test.tensors["factors"]), factor_names=reader.factor_names
    )
    assert acc["per_factor"]["colour"] >= 0.99 and acc["per_factor"]["shape"] >= 0.95
    assert min(acc["per_factor"].values()) >= 0.95 and acc["coherence"] >= 0.88


# --- genlab.evaluate ------------------------------------------------------------------------------------


def test_evaluate_computes_coherence_for_multimodal_models(av, monkeypatch) -> None:
    images = _known_images(av)
    oracle = Renderer(av.spec, images)
    assert "coherence" in applicable_metrics(oracle)
    vae = genlab.build_model("vae", av.spec, z_dim=2, hidden=[8], channels=4)
    assert "coherence" not in applicable_metrics(vae)
    with pytest.raises(ValueError, match="needs a multimodal model"):
        genlab.evaluate(vae, av, ["coherence"])
    module = sys.modules["genlab.metrics.coherence"]  # genlab.metrics.coherence is the function
    monkeypatch.setattr(module, "factor_readers", lambda spec, train=None: lookup_readers(spec, images))
    res = genlab.evaluate(oracle, av, ["coherence"], n_samples=50)
    assert res["coherence/text->x"] == 1.0 and res["coherence/joint"] == 1.0 and res["coherence_examples"] == 50
    assert res["factors/x->audio"] == "shape,scale,colour,region_x" and 0 <= res["chance/x->text"] < 0.05
