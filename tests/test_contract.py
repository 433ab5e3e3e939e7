"""Contract tests over the whole registry: every model on every tiny data spec it accepts (conftest's
ACCEPTS, at conftest's TINY size, float64, fixed seeds), and a loud refusal of every other spec."""

import dataclasses

import pytest
import torch
from conftest import ACCEPTS, SPECS, TINY, builtin_models, tiny_model

from genlab.checkpoint import load_tensors, save_tensors

B = 6  # batch size of the fake batches


def all_cases():
    for name in builtin_models():
        for spec_name in SPECS:
            for conditional in (False, True):
                yield name, spec_name, conditional


def accepted(name, spec_name, conditional):
    return conditional in ACCEPTS.get(name, {}).get(spec_name, ())


def case_id(name, spec_name, conditional):
    return f"{name}-{spec_name}" + ("-cond" if conditional else "")


ACCEPTED = [pytest.param(*c, id=case_id(*c)) for c in all_cases() if accepted(*c)]
REFUSED = [pytest.param(*c, id=case_id(*c)) for c in all_cases() if not accepted(*c)]


def fake_data(spec, n, g):
    """[n, *shape] fake data of one modality's spec."""
    if spec.kind == "tokens":  # token ids, not levels scaled to [0, 1]
        return torch.randint(0, spec.levels, (n, *spec.shape), generator=g)
    if spec.levels:  # floats level / (L - 1)
        return torch.randint(0, spec.levels, (n, *spec.shape), generator=g).double() / (spec.levels - 1)
    if spec.value_range is not None:  # continuous data inside its range
        lo, hi = spec.value_range
        return lo + (hi - lo) * torch.rand(n, *spec.shape, generator=g, dtype=torch.float64)
    return torch.randn(n, *spec.shape, generator=g, dtype=torch.float64)


def fake_batch(spec, n=B):
    """One tensor per modality of ``spec`` ("x" alone for data of one modality) and class ids "y"."""
    g = torch.Generator().manual_seed(0)
    batch = {key: fake_data(spec.modality(key), n, g) for key in spec.modality_keys}
    return {**batch, "y": torch.arange(n) % spec.num_classes}


def model_input(model, batch):
    """What log_prob and encode take: the dict of a multimodal model's modalities, else the one tensor."""
    keys = model.capabilities.modalities
    return {k: batch[k] for k in keys} if keys else batch[model.data_key]


def assert_like_data(s, spec, n, where):
    """Samples s [n, *shape] have the data's shape, dtype, range and levels."""
    assert s.shape == (n, *spec.shape), where
    if spec.kind == "tokens":
        assert s.dtype == torch.long and s.min() >= 0 and s.max() < spec.levels, where
    else:
        assert s.dtype == torch.float64 and torch.isfinite(s).all(), where
    if spec.value_range is not None:
        lo, hi = spec.value_range
        assert s.min() >= lo and s.max() <= hi, where
    if spec.levels:  # samples lie on the data's levels
        lv = s * (spec.levels - 1) if s.is_floating_point() else s
        assert torch.allclose(lv, lv.round(), atol=1e-6), where


def test_tables_cover_the_registry():
    """A new model fails here until it has a TINY size and a list of accepted data kinds."""
    models = set(builtin_models())
    assert models >= {"vae", "made", "pixelcnn", "transformer", "wavenet", "glow", "dcgan"}
    assert set(TINY) == models, f"TINY: missing {sorted(models - set(TINY))}, unknown {sorted(set(TINY) - models)}"
    assert set(ACCEPTS) == models, (
        f"ACCEPTS: missing {sorted(models - set(ACCEPTS))}, unknown {sorted(set(ACCEPTS) - models)}"
    )
    for name, specs in ACCEPTS.items():
        assert specs and set(specs) <= set(SPECS), f"{name}: accepts {sorted(specs)}; specs are {sorted(SPECS)}"
        assert all(conds and set(conds) <= {False, True} for conds in specs.values()), name


def assert_every_parameter_learns(model, losses, where):
    """Each parameter group's loss is a finite scalar with a nonzero gradient on EVERY parameter of
    the group, and the groups partition the trainable parameters (none stepped twice or never)."""
    names = {id(p): n for n, p in model.named_parameters()}
    groups = model.parameter_groups()
    grouped = [id(p) for params in groups.values() for p in params]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(set(grouped)), f"{where}: a parameter is in two groups"
    never = sorted(names[i] for i in set(trainable) - set(grouped))
    assert not never, f"{where}: trainable parameters in no group: {never}"
    for key, params in groups.items():
        assert key in losses, f"{where}: loss() has no key {key!r} for parameter group {key!r}"
        loss = losses[key]
        assert loss.dim() == 0 and torch.isfinite(loss), f"{where}: loss {key!r} = {loss}"
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        dead = [names[id(p)] for p, g in zip(params, grads) if g is None or not bool(g.abs().sum() > 0)]
        assert not dead, f"{where}: no gradient of loss {key!r} reaches {dead}"


@pytest.mark.parametrize("name,spec_name,conditional", ACCEPTED)
def test_model_contract(name, spec_name, conditional, tmp_path):
    spec = SPECS[spec_name]
    model = tiny_model(name, spec, conditional=conditional)
    batch = fake_batch(spec)

    # Output layers are zero-initialized in several families (flows start at the identity), which
    # blocks the gradient to every layer below them at initialization; jitter every parameter so the
    # check sees which parameters the loss depends on at all, not which are zero right now.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.train()
    assert_every_parameter_learns(model, model.loss(batch), case_id(name, spec_name, conditional))

    cond = model.condition(batch)
    assert (cond is None) == (not conditional)
    model.eval()
    x = model_input(model, batch)
    if model.likelihood == "none":
        with pytest.raises(NotImplementedError, match=r"\w"):
            model.log_prob(x, cond)
    else:
        lp = model.log_prob(x, cond)
        assert lp.shape == (B,) and lp.dtype == torch.float64 and torch.isfinite(lp).all()

    if not model.capabilities.sample:  # e.g. frozen: p(text | image) has no images to draw
        with pytest.raises(NotImplementedError, match=r"\w"):
            model.sample(5, generator=torch.Generator().manual_seed(1))
    elif model.capabilities.modalities:
        s = model.sample(
            5, None if cond is None else cond[:5], generator=torch.Generator().manual_seed(1)
        )  # a dict with one tensor per modality, each like its data
        assert isinstance(s, dict) and set(s) == set(model.capabilities.modalities)
        for key, t in s.items():
            assert_like_data(t, spec.modality(key), 5, f"sample[{key!r}]")
    else:
        s = model.sample(5, None if cond is None else cond[:5], generator=torch.Generator().manual_seed(1))
        assert_like_data(s, spec, 5, "sample")

    try:
        z = model.encode(x, cond)
    except NotImplementedError as e:  # e.g. GANs: no encoder; the model must say why
        assert str(e)
    else:
        assert z.dim() == 2 and z.shape[0] == B and torch.isfinite(z).all()

    # Save/load round trip through safetensors rebuilds an identical model.
    save_tensors(model.state_dict(), tmp_path / "m.safetensors")
    torch.manual_seed(1)  # a different initialization: the loaded weights must overwrite all of it
    twin = tiny_model(name, spec, conditional=conditional)
    tensors, _ = load_tensors(tmp_path / "m.safetensors")
    twin.load_state_dict(tensors)
    twin.eval()
    if model.likelihood != "none":
        torch.manual_seed(3)
        a = model.log_prob(x, cond)
        torch.manual_seed(3)
        b = twin.log_prob(x, cond)
    else:
        a = model.sample(3, None if cond is None else cond[:3], generator=torch.Generator().manual_seed(2))
        b = twin.sample(3, None if cond is None else cond[:3], generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)


def _names_bad_value(message, spec):
    # The message must point at what is wrong with this data set: its name, kind, shape, levels or dtype.
    return any(
        s in message
        for s in (repr(spec.name), repr(spec.kind), str(spec.shape), f"levels={spec.levels}", repr(spec.dtype))
    )


@pytest.mark.parametrize("name,spec_name,conditional", REFUSED)
def test_model_refuses_other_data(name, spec_name, conditional):
    """A model handed data it does not model says so at construction, in one line naming the value."""
    spec = SPECS[spec_name]
    with pytest.raises(ValueError) as info:
        tiny_model(name, spec, conditional=conditional)
    message = str(info.value)
    assert message and "\n" not in message, message
    assert _names_bad_value(message, spec), f"{name} on {spec_name}: the error names no bad value: {message}"


@pytest.mark.parametrize("name", sorted(ACCEPTS))
def test_conditional_needs_labels(name):
    """conditional=True on a data set without classes is refused, naming the data set."""
    spec = dataclasses.replace(SPECS[next(iter(ACCEPTS[name]))], name="unlabelled", num_classes=None)
    with pytest.raises(ValueError, match="'unlabelled'") as info:
        tiny_model(name, spec, conditional=True)
    assert "\n" not in str(info.value)
    tiny_model(name, spec)  # unconditional: fine without labels
