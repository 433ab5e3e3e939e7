"""Per-modality quality of multimodal models (genlab.metrics.multimodal_quality): unit conversions and
conditional estimates on test doubles whose log_prob is known in closed form, the linear probe on codes
with known content, FID of a model that copies real images, and ``genlab.evaluate`` on a tiny mvae."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch

import genlab
from genlab import Capabilities, DataSpec, GenerativeModel, load_dataset
from genlab.data.base import TensorDataset
from genlab.evaluate import applicable_metrics, sample_metrics
from genlab.metrics.multimodal_quality import linear_probe, modality_bits, modality_quality, modality_unit

LN2 = math.log(2.0)
SPEC = DataSpec(
    name="trio",
    kind="multimodal",
    shape=(1, 2, 2),
    levels=2,
    modalities={
        "x": DataSpec(name="x", kind="image", shape=(1, 2, 2), levels=2),  # D = 4, two levels
        "text": DataSpec(name="text", kind="tokens", shape=(3,), dtype="int64", value_range=None, levels=5),
        "audio": DataSpec(name="audio", kind="audio", shape=(6,), value_range=(-1.0, 1.0)),  # continuous
    },
)
#: The known model's marginal cost of each modality (nats), the per-example slope on the first token,
#: and how many nats each source saves on each target.
COST = {"x": 2.0, "text": 3.0, "audio": 5.0}
SLOPE = 0.1
SAVED = {("x", "text"): 0.5, ("audio", "text"): 0.25, ("x", "audio"): 1.0, ("text", "x"): 0.125}


class Known(GenerativeModel):
    """log p(x_m) = -COST[m] - SLOPE * first token id (per example); log p(x_t | x_S) = log p(x_t) +
    sum_{s in S} SAVED[s, t]; the joint = sum of the marginals + 0.75. Records each call's k."""

    likelihood = "bound"

    def __init__(self, discrete: bool) -> None:
        super().__init__(SPEC)
        self.capabilities = Capabilities(sample=False, iwae=True, modalities=("x", "text", "audio"))
        self.discrete, self.ks = discrete, []

    def log_prob(self, x, cond=None, k=None, *, given=None):
        self.ks.append(k)
        ref = next(iter(x.values()))
        per_ex = -SLOPE * x["text"][:, 0].double() if "text" in x else torch.zeros(len(ref), dtype=torch.float64)
        if given:
            (t,) = [m for m in x if m not in given]
            return -COST[t] + per_ex * (t == "text") + sum(SAVED.get((s, t), 0.0) for s in given)
        lp = -sum(COST[m] for m in x) + per_ex
        return lp + 0.75 if len(x) == 3 else lp


def trio_data(n: int = 12) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(
        {
            "x": torch.randint(0, 2, (n, 1, 2, 2), generator=g).float(),
            "text": torch.randint(0, 5, (n, 3), generator=g),
            "audio": torch.rand(n, 6, generator=g) * 2 - 1,
        },
        SPEC,
        "test",
    )


@pytest.mark.parametrize("discrete", [True, False])
def test_units_and_conditionals_of_a_known_model(discrete: bool) -> None:
    data = trio_data()
    model = Known(discrete)
    res = modality_quality(model, data, k=7, n_examples=100, n_samples=4)
    mean_tok = float(data.tensors["text"][:, 0].double().mean())
    text_nats = -COST["text"] - SLOPE * mean_tok
    assert res["modalities_examples"] == 12 and res["modalities_k"] == 7 and set(model.ks) == {7}
    assert res["modality/text/nats"] == pytest.approx(text_nats)
    assert res["modality/text/bits_per_token"] == pytest.approx(-text_nats / (3 * LN2))  # tokens: never an offset
    assert res["modality/audio/bits_per_sample"] == pytest.approx(COST["audio"] / (6 * LN2))  # continuous
    # image: a mass needs no dequantization; a density of 2-level data adds D ln 2, i.e. 1 bit per dimension
    assert res["modality/x/bits_per_dim"] == pytest.approx(COST["x"] / (4 * LN2) + (0 if discrete else 1))
    assert res["modality/x/dims"] == 4 and res["modality/text/dims"] == 3 and res["modality/audio/dims"] == 6
    joint = -sum(COST.values()) - SLOPE * mean_tok + 0.75
    assert res["joint/nats"] == pytest.approx(joint)
    assert res["joint/bits_per_dim"] == pytest.approx((-joint + (0 if discrete else 4 * LN2)) / (13 * LN2))
    # every ordered pair and every larger source set, in the target's unit, with the gain beside it
    assert res["conditional/x->text/nats"] == pytest.approx(text_nats + 0.5)
    assert res["conditional/x->text/bits_per_token"] == pytest.approx(-(text_nats + 0.5) / (3 * LN2))
    assert res["conditional/x->text/gain_nats"] == pytest.approx(0.5)
    assert res["conditional/x->text/gain_nats_se"] == pytest.approx(0.0, abs=1e-12)
    assert res["conditional/text->audio/gain_nats"] == pytest.approx(0.0)
    assert res["conditional/x+audio->text/gain_nats"] == pytest.approx(0.75)
    assert res["conditional/text->x/bits_per_dim"] == pytest.approx(
        (COST["x"] - 0.125) / (4 * LN2) + (0 if discrete else 1)
    )
    pairs = [k for k in res if k.startswith("conditional/") and k.endswith("/nats")]
    assert len(pairs) == 6 + 3
    # what the model cannot do is said, not computed
    assert "sample" in res["fid/skipped"] and "encoder" in res["probe/skipped"]
    assert modality_unit(SPEC.modality("audio")) == "bits_per_sample"
    assert modality_bits(-10.0, SPEC, ("text",), False) == pytest.approx(10 / (3 * LN2))


class Table(GenerativeModel):
    """Two one-token modalities a, b with a known joint table P[a, b]: log_prob returns the exact log
    marginals, joint and conditionals, so the gain is the exact pointwise mutual information."""

    likelihood = "exact"

    def __init__(self, p: np.ndarray) -> None:
        tok = DataSpec(name="t", kind="tokens", shape=(1,), dtype="int64", value_range=None, levels=len(p))
        super().__init__(DataSpec(name="ab", kind="multimodal", shape=(1,), modalities={"x": tok, "b": tok}))
        self.capabilities = Capabilities(sample=False, modalities=("x", "b"))
        self.discrete = True
        self.logp = torch.log(torch.as_tensor(p, dtype=torch.float64))

    def log_prob(self, x, cond=None, *, given=None):
        a, b = (x[m][:, 0] if m in x else None for m in ("x", "b"))
        la, lb = self.logp.logsumexp(1), self.logp.logsumexp(0)
        if a is None or b is None:
            return la[a] if b is None else lb[b]
        joint = self.logp[a, b]
        return joint - {"x": la[a], "b": lb[b]}[given[0]] if given else joint


def test_gain_is_the_pointwise_mutual_information() -> None:
    p = np.array([[0.3, 0.05, 0.05], [0.05, 0.2, 0.05], [0.0, 0.1, 0.2]])
    rng = np.random.default_rng(0)
    cells = rng.choice(9, size=4000, p=p.ravel())
    a, b = torch.from_numpy(cells // 3)[:, None], torch.from_numpy(cells % 3)[:, None]
    model = Table(p)
    data = TensorDataset({"x": a, "b": b}, model.spec, "test")
    res = modality_quality(model, data, k=None, n_examples=4000, n_samples=2)
    outer = p.sum(1, keepdims=True) * p.sum(0, keepdims=True)
    mutual_info = float(np.sum(p[p > 0] * np.log(p[p > 0] / outer[p > 0])))
    gain = res["conditional/x->b/gain_nats"]
    # PMI is symmetric, and equals joint - both marginals, per example: exact identities
    assert gain == pytest.approx(res["conditional/b->x/gain_nats"], abs=1e-12)
    assert gain == pytest.approx(res["joint/nats"] - res["modality/x/nats"] - res["modality/b/nats"], abs=1e-12)
    # its mean over data drawn from P estimates the mutual information I(a; b)
    assert abs(gain - mutual_info) < 3 * res["conditional/x->b/gain_nats_se"]
    assert res["modality/b/bits_per_token"] == pytest.approx(-res["modality/b/nats"] / LN2)
    assert res["modalities_k"] == 1 and "fid/x" not in res  # an exact model: k does not apply


# --- the linear probe -----------------------------------------------------------------------------------


def test_probe_reads_linear_codes_and_not_random_ones() -> None:
    rng = np.random.default_rng(0)
    sizes = (3, 6, 7)
    f = np.stack([rng.integers(0, s, 3000) for s in sizes], 1)
    onehot = np.concatenate([np.eye(s)[f[:, i]] for i, s in enumerate(sizes)], 1)  # [N, 16]
    codes = onehot @ rng.normal(size=(16, 20)) + 0.05 * rng.normal(size=(3000, 20))  # linear in the factors
    for i in range(3):
        acc, base = linear_probe(codes[:2000], f[:2000, i], codes[2000:], f[2000:, i])
        assert acc > 0.98 and base < 0.45
    # random codes: the probe can do no better than the majority class (here 60 %)
    y = rng.choice(3, 3000, p=[0.6, 0.2, 0.2])
    acc, base = linear_probe(rng.normal(size=(2000, 8)), y[:2000], rng.normal(size=(1000, 8)), y[2000:])
    assert base == pytest.approx((y[2000:] == 0).mean()) and abs(acc - base) < 0.04
    assert linear_probe(codes[:5], np.zeros(5), codes[5:9], np.array([0, 0, 1, 2])) == (0.5, 0.5)  # one class
    with pytest.raises(ValueError, match="codes"):
        linear_probe(codes[:5], f[:4, 0], codes[5:9], f[5:9, 0])


# --- FID of joint samples, and genlab.evaluate ----------------------------------------------------------


class PooledFeatures:
    """A fast stand-in for the feature network: 4x4 average-pooled pixels (48 features at 16x16)."""

    name, num_classes = "pool4", None

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.avg_pool2d(x.double(), 4).flatten(1)

    def predict(self, x: torch.Tensor) -> None:
        return None


@pytest.fixture()
def pooled(monkeypatch):
    module = sys.modules["genlab.metrics.features"]
    monkeypatch.setattr(module, "feature_extractor", lambda data, kind="auto": PooledFeatures())


@pytest.fixture(scope="module")
def av() -> tuple[TensorDataset, TensorDataset]:
    return load_dataset("shapes-av", "train", n=400, size=16), load_dataset("shapes-av", "test", n=200, size=16)


class Copier(GenerativeModel):
    """Samples real training examples (``blank``: black images): real-vs-real FID, or a bad one."""

    def __init__(self, train: TensorDataset, blank: bool = False) -> None:
        super().__init__(train.spec)
        self.capabilities = Capabilities(sample=True, modalities=train.spec.modality_keys)
        self.pool, self.blank = train, blank

    def sample(self, n, cond=None, *, generator=None):
        idx = torch.randint(len(self.pool), (n,), generator=generator)
        out = {m: self.pool.tensors[m][idx] for m in self.capabilities.modalities}
        return {**out, "x": out["x"] * 0} if self.blank else out


def test_fid_of_real_images_is_near_the_real_vs_real_reference(av, pooled) -> None:
    train, test = av
    res = modality_quality(Copier(train), test, reference=train, n_samples=200, seed=1, image_metrics=sample_metrics)
    assert res["features/x"] == "pool4" and res["modalities_samples"] == 200
    assert res["fid/x"] < 1.5 * res["fid_reference/x"] and abs(res["kid/x"]) < 3 * res["kid_std/x"] + 1e-3
    bad = modality_quality(
        Copier(train, blank=True), test, reference=train, n_samples=200, seed=1, image_metrics=sample_metrics
    )
    assert bad["fid/x"] > 5 * res["fid_reference/x"] and bad["kid/x"] > 10 * abs(res["kid/x"])
    assert "modality/skipped" in res and "probe/skipped" in res  # no log_prob, no encoder


def test_evaluate_reports_modalities_of_a_tiny_mvae(av, pooled) -> None:
    train, test = av
    model = genlab.build_model("mvae", test.spec, z_dim=2, hidden=8, channels=4).double()
    assert "modalities" in applicable_metrics(model)
    vae = genlab.build_model("vae", test.spec, z_dim=2, hidden=[8], channels=4)
    assert "modalities" not in applicable_metrics(vae)
    with pytest.raises(ValueError, match="modalities"):
        genlab.evaluate(vae, test, ["modalities"])
    res = genlab.evaluate(model, test, ["modalities"], k=2, n_samples=24, reference=train)
    keys = ("x", "text", "audio")
    assert res["modalities_k"] == 2 and res["modalities_examples"] == 24 and res["probe_train_examples"] == 400
    assert res["probe_test_examples"] == 24
    for m, unit in zip(keys, ("bits_per_dim", "bits_per_token", "bits_per_sample")):
        assert res[f"modality/{m}/nats"] < 0 and res[f"modality/{m}/{unit}"] > 0
    for s in keys:
        for t in (t for t in keys if t != s):
            assert math.isfinite(res[f"conditional/{s}->{t}/gain_nats"])
    assert math.isfinite(res["fid/x"]) and res["fid_reference/x"] >= 0 and "kid/x" in res
    for sources in ("x", "text", "audio", "x+text+audio"):
        for f in ("shape", "scale", "colour", "region_x", "region_y"):
            assert 0 <= res[f"probe/{sources}/{f}"] <= 1 and 0 <= res[f"probe_baseline/{f}"] <= 1
    # user pairs without factors: the probe says why it is missing
    bare = TensorDataset({k: v for k, v in test.tensors.items() if k != "factors"}, test.spec, "test")
    res = genlab.evaluate(model, bare, ["modalities"], k=1, n_samples=8, reference=bare)
    assert "no ground-truth factors" in res["probe/skipped"] and "fid_reference/x" not in res


def test_cli_accepts_the_metric_name(tmp_path, capsys) -> None:
    from genlab.cli import main

    assert main(["eval", str(tmp_path / "nothing"), "--metrics", "Modalities"]) == 2
    assert "unknown metric" not in capsys.readouterr().err
