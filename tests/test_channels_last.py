"""channels_last=true: the same training in NHWC memory layout (faster convolutions on a CPU)."""

import pytest
import torch
from conftest import TINY

import genlab
from genlab import DataSpec, TrainConfig, Trainer
from genlab.data.base import TensorDataset

SPEC = DataSpec(name="img17", kind="image", shape=(1, 8, 8), levels=17, num_classes=3)
FAMILIES = ["realnvp", "glow", "vae", "pixelcnn", "ddpm", "dcgan", "wgan_gp"]


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 17, (n, 1, 8, 8), generator=g).float() / 16
    return TensorDataset({"x": x, "y": torch.randint(0, 3, (n,), generator=g)}, SPEC, "train")


def _model(name):
    torch.manual_seed(0)
    return genlab.build_model(name, SPEC, **TINY.get(name, {}))


@pytest.mark.parametrize("name", FAMILIES)
def test_the_loss_and_its_gradient_do_not_depend_on_the_layout(name):
    batch = {k: v[:16] for k, v in _data().tensors.items()}
    grads = []
    for cl in (False, True):
        model = _model(name).train()
        b = dict(batch)
        if cl:
            model.to(memory_format=torch.channels_last)
            b["x"] = b["x"].contiguous(memory_format=torch.channels_last)
        torch.manual_seed(1)  # the same noise draws in both layouts
        losses = model.loss(b)
        key = next(iter(model.parameter_groups()))
        losses[key].backward()
        grads.append((float(losses[key]), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}))
    (l0, g0), (l1, g1) = grads
    assert l1 == pytest.approx(l0, rel=1e-5, abs=1e-5)
    for n in g0:
        assert torch.allclose(g0[n], g1[n], rtol=1e-3, atol=1e-5), n


@pytest.mark.parametrize("name", ["realnvp", "vae"])
def test_a_channels_last_run_checkpoints_plain_weights(name, tmp_path):
    model = _model(name)
    cfg = TrainConfig(steps=4, batch_size=16, eval_every=0, sample_every=0, progress=False, channels_last=True)
    Trainer(model, _data(), config=cfg, out_dir=tmp_path / "run").fit()
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in model.parameters() if p.dim() == 4)
    run = genlab.load_run(tmp_path / "run", weights="last")  # a fresh, contiguous model
    x = _data(8, seed=1).tensors["x"]
    with torch.no_grad():
        torch.manual_seed(2)
        a = run.model.eval().log_prob(x)
        torch.manual_seed(2)
        b = model.eval().log_prob(x)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-3)
    assert run.model.sample(2).shape[1:] == (1, 8, 8)
