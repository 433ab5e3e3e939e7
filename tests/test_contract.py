"""Contract tests over the whole registry: every model on every tiny data spec it accepts."""

import pytest
import torch

import genlab
from genlab import DataSpec
from genlab.checkpoint import load_tensors, save_tensors

SPECS = [
    DataSpec(name="bin-img", kind="image", shape=(1, 4, 4), levels=2, num_classes=3),
    DataSpec(name="img17", kind="image", shape=(1, 8, 8), levels=17, num_classes=3),
    DataSpec(name="rgb16", kind="image", shape=(3, 16, 16), levels=256, num_classes=3),
    DataSpec(name="vec", kind="vector", shape=(2,), value_range=None, num_classes=3),
    DataSpec(
        name="tokens",
        kind="tokens",
        shape=(7,),
        dtype="int64",
        value_range=None,
        levels=5,
        vocab=tuple("<>abc"),
        num_classes=3,
    ),
    DataSpec(name="audio", kind="audio", shape=(12,), value_range=(-1.0, 1.0), num_classes=3),
]


def cases():
    for name in genlab.list_models():
        for spec in SPECS:
            yield pytest.param(name, spec, id=f"{name}-{spec.name}")


def fake_batch(spec, n=6):
    g = torch.Generator().manual_seed(0)
    if spec.kind == "tokens":  # token ids, not levels scaled to [0, 1]
        x = torch.randint(0, spec.levels, (n, *spec.shape), generator=g)
    elif spec.levels:
        x = torch.randint(0, spec.levels, (n, *spec.shape), generator=g).double() / (spec.levels - 1)
    else:
        x = torch.randn(n, *spec.shape, generator=g, dtype=torch.float64)
    return {"x": x, "y": torch.arange(n) % spec.num_classes}


@pytest.mark.parametrize("name,spec", list(cases()))
@pytest.mark.parametrize("conditional", [False, True])
def test_model_contract(name, spec, conditional, tmp_path):
    kw = {"conditional": True} if conditional else {}
    try:
        model = genlab.build_model(name, spec, **kw).double()
    except ValueError as e:  # the model does not take this kind of data / option: it must say so
        assert str(e)
        pytest.skip(f"{name} rejects {spec.name}: {e}")
    batch = fake_batch(spec)
    losses = model.loss(batch)
    for key, params in model.parameter_groups().items():
        assert losses[key].dim() == 0 and torch.isfinite(losses[key])
        grads = torch.autograd.grad(losses[key], params, allow_unused=True, retain_graph=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads)
    cond = model.condition(batch)
    model.eval()
    if model.likelihood != "none":
        lp = model.log_prob(batch["x"], cond)
        assert lp.shape == (6,) and torch.isfinite(lp).all()
    s = model.sample(5, None if cond is None else cond[:5], generator=torch.Generator().manual_seed(1))
    assert s.shape == (5, *spec.shape)
    if spec.value_range is not None:
        lo, hi = spec.value_range
        assert s.min() >= lo and s.max() <= hi
    if spec.levels:  # samples lie on the data's levels
        lv = s * (spec.levels - 1)
        assert torch.allclose(lv, lv.round(), atol=1e-6)
    try:
        z = model.encode(batch["x"], cond)
    except NotImplementedError as e:  # e.g. GANs: no encoder; the model must say so
        assert str(e)
    else:
        assert z.shape[0] == 6 and z.dim() == 2
    # save/load round trip through safetensors rebuilds an identical model
    save_tensors(model.state_dict(), tmp_path / "m.safetensors")
    twin = genlab.build_model(name, spec, **kw).double()
    tensors, _ = load_tensors(tmp_path / "m.safetensors")
    twin.load_state_dict(tensors)
    twin.eval()
    if model.likelihood != "none":
        torch.manual_seed(3)
        a = model.log_prob(batch["x"], cond)
        torch.manual_seed(3)
        b = twin.log_prob(batch["x"], cond)
        assert torch.equal(a, b)
