"""``compile=true``: a bad value is refused in one line; a compiled run trains the same model, its
checkpoint has the plain state-dict keys, loads into an uncompiled model and resumes; a missing
compiler falls back. Also the flows' cheaper dropout (issue 16)."""

import pytest
import torch

import genlab
from genlab import TrainConfig, Trainer
from genlab.checkpoint import load_tensors
from genlab.train import compile_unavailable


def _run(out, steps: int, compile_: bool = True) -> Trainer:
    tr = genlab.load_dataset("digits", "train")
    torch.manual_seed(0)
    model = genlab.build_model("vae", tr.spec, z_dim=2, hidden=(8,), arch="mlp")
    cfg = TrainConfig(
        steps=steps, batch_size=16, eval_every=0, sample_every=0, checkpoint_every=2, progress=False, compile=compile_
    )
    return Trainer(model, tr, None, cfg, out)


@pytest.mark.parametrize("bad", ["yes", 1, "maybe"])
def test_bad_compile_value_is_refused_in_one_line(bad):
    with pytest.raises(ValueError) as e:
        TrainConfig(compile=bad)
    assert "\n" not in str(e.value) and "compile" in str(e.value) and "bool" in str(e.value)


def test_missing_compiler_falls_back_with_a_warning(monkeypatch):
    import torch._inductor.cpp_builder as cb

    def no_compiler() -> str:
        raise RuntimeError("Failed to find a working C++ compiler")

    monkeypatch.setattr(cb, "get_cpp_compiler", no_compiler)
    assert "C++ compiler" in compile_unavailable(torch.device("cpu"))
    with pytest.warns(UserWarning, match="compile=true ignored.*C\\+\\+ compiler"):
        t = _run(None, 2)
    assert t._loss_fn == t.model.loss  # eager
    t.fit()


def _losses(out) -> list[float]:
    import json

    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]


@pytest.mark.slow
@pytest.mark.skipif(compile_unavailable(torch.device("cpu")) is not None, reason="torch.compile unavailable here")
def test_compiled_run_trains_the_same_model_and_its_checkpoint_loads_uncompiled(tmp_path):
    import torch._dynamo
    import torch._inductor.config as inductor

    torch._dynamo.reset()
    # fallback_random: inductor draws the VAE's noise with torch's own generator, as eager does, so
    # the compiled and eager runs must give the same losses and weights up to float rounding.
    with inductor.patch(fallback_random=True):
        t = _run(tmp_path / "run", 4)
        assert t._loss_fn != t.model.loss  # really compiled
        t.cfg.log_every = 1
        t.fit()
    e = _run(tmp_path / "eager", 4, compile_=False)
    e.cfg.log_every = 1
    e.fit()
    torch.testing.assert_close(_losses(tmp_path / "run"), _losses(tmp_path / "eager"), rtol=1e-4, atol=1e-4)
    weights, _ = load_tensors(tmp_path / "run" / "model.safetensors")
    assert not any("_orig_mod" in k for k in weights)
    plain = genlab.build_model("vae", t.model.spec, z_dim=2, hidden=(8,), arch="mlp")
    plain.load_state_dict(weights)  # strict: every key matches an uncompiled model's
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(v, e.model.state_dict()[k], rtol=1e-4, atol=1e-5)
    # --resume: a longer compiled run continues from the checkpoint at step 4
    t2 = _run(tmp_path / "run", 6)
    summary = t2.fit(resume=True)
    assert summary["step"] == 6 and summary["stopped"] == "completed"
    assert len(_losses(tmp_path / "run")) >= 5


# --- issue 16's other speed change: the flows' dropout draws uniforms, not bernoulli_ ------------


@pytest.mark.parametrize("p", [0.3, 0.7])
def test_dropout_keeps_each_entry_with_probability_1_minus_p_and_is_unbiased(p):
    from genlab.nn import dropout

    torch.manual_seed(0)
    n = 200_000
    x = torch.ones(n, dtype=torch.float64, requires_grad=True)
    y = dropout(x, p)
    kept = y != 0
    sd = (p * (1 - p) / n) ** 0.5  # binomial standard deviation of the kept fraction
    assert abs(kept.double().mean().item() - (1 - p)) < 5 * sd
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / (1 - p)))  # inverted scaling
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # d y_i / d x_i = mask_i / (1 - p)
    assert dropout(x, p, training=False) is x and dropout(x, 0.0) is x
    with pytest.raises(ValueError, match="p=1"):
        dropout(x, 1.0)
