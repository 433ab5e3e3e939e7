"""A text file's split scored as one stream: each block given the text before it (genlab.evaluate.stream_*)."""

import math

import pytest
import torch

import genlab
from genlab.evaluate import stream_log_prob, stream_metrics, streamable

TEXT = "abcabcabd" * 60  # a Markov chain's favourite: the next letter depends on the previous one


class _Bigram(genlab.GenerativeModel):
    """An exact first-order Markov chain over the vocabulary: log_prob of any length T (causal)."""

    likelihood = "exact"
    variable_length = True

    def __init__(self, spec, seed=0):
        super().__init__(spec)
        g = torch.Generator().manual_seed(seed)
        v = spec.levels
        self.discrete = True
        self.init = torch.randn(v, generator=g, dtype=torch.float64).log_softmax(0)
        self.trans = torch.randn(v, v, generator=g, dtype=torch.float64).log_softmax(1)

    def log_prob(self, x, cond=None):
        x = x.long()
        return self.init[x[:, 0]] + self.trans[x[:, :-1], x[:, 1:]].sum(1)


def _markov_log_prob(model, stream):
    return float(model.init[stream[0]] + model.trans[stream[:-1], stream[1:]].sum())


def test_the_stream_of_a_markov_chain_is_its_exact_log_likelihood(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    test = genlab.load_dataset(str(path), "train", block_size=16)
    model = _Bigram(test.spec)
    assert streamable(model, test)
    x = test.tensors["x"]
    exact = _markov_log_prob(model, x.reshape(-1))
    for stride in (1, 5, 8, 15):  # any stride gives each token >= 1 token of context: exact for a bigram
        total, n = stream_log_prob(model, x, stride, batch_size=7)
        assert n == x.numel() and total == pytest.approx(exact, rel=1e-12, abs=1e-9), stride
    # stride = T is block-by-block scoring: every block restarts from the initial distribution
    total, _ = stream_log_prob(model, x, 16)
    assert total == pytest.approx(float(model.log_prob(x).sum()), rel=1e-12)
    assert total != pytest.approx(exact)
    out = stream_metrics(model, test)
    assert out["stream_context"] == 8 and out["stream_bpd"] == pytest.approx(-exact / (x.numel() * math.log(2)))
    with pytest.raises(ValueError, match="stride"):
        stream_log_prob(model, x, 17)


def test_a_transformer_on_a_text_file_gets_the_stream_figure_and_it_uses_the_context(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    data = genlab.load_dataset(str(path), "train", block_size=8)
    model = genlab.build_model("transformer", data.spec, d_model=16, n_layers=1, n_heads=2)
    trainer = genlab.Trainer(model, data, config=genlab.TrainConfig(steps=150, batch_size=16, lr=3e-3, progress=False))
    trainer.fit()
    out = genlab.evaluate(model, data, ["likelihood"])
    assert {"stream_bpd", "stream_context"} <= set(out)
    # causal: log_prob of the first k tokens is the sum of the first k per-token terms of the whole window
    w = data.tensors["x"][:4]
    with torch.no_grad():
        terms = model(w).log_softmax(-1).gather(-1, w[..., None])[..., 0]  # [B, T] log p(x_t | x_<t)
        for k in range(1, 9):
            assert torch.allclose(model.log_prob(w[:, :k]), terms[:, :k].sum(1), atol=1e-5), k
    # the period-9 text cut into blocks of 8: a block's first letters are unpredictable without context
    assert out["stream_bpd"] < out["log_prob_bpd"]


def test_the_default_eval_of_an_lm_skips_the_disentanglement_scores():
    from genlab.evaluate import applicable_metrics, default_metrics

    spec = genlab.load_dataset("shapes-captions", "test", n=50).spec
    lm = genlab.build_model("transformer", spec, source="text", d_model=8, n_layers=1, n_heads=2)
    vae = genlab.build_model("sentencevae", spec, source="text")
    assert "disentanglement" in applicable_metrics(lm) and "disentanglement" not in default_metrics(lm)
    assert "disentanglement" in default_metrics(vae)  # a latent-variable model keeps them


def _tiny_lm(levels, seed=0):
    spec = genlab.DataSpec(name="toy", kind="tokens", shape=(4,), levels=levels, dtype="int64")
    torch.manual_seed(seed)
    return genlab.build_model("transformer", spec, d_model=8, n_layers=1, n_heads=2)


def test_dynamic_evaluation_is_a_normalized_distribution_over_streams():
    """Each token is scored before the weights learn from it: sum over all 2^8 streams of p = 1."""
    import itertools

    from genlab.evaluate import dynamic_log_prob

    model = _tiny_lm(2).double()  # float64: the sum is checked to 1e-9
    streams = torch.tensor(list(itertools.product([0, 1], repeat=8)))  # every stream [2 blocks of 4]
    for stride, lr, beta in ((2, 0.05, 0.999), (3, 0.3, 0.5), (4, 1.0, None)):
        logp = [dynamic_log_prob(model, s.reshape(2, 4), stride, lr=lr, beta=beta)[0] for s in streams]
        assert math.fsum(math.exp(v) for v in logp) == pytest.approx(1.0, abs=1e-9), (stride, lr, beta)


def test_dynamic_evaluation_adapts_to_the_text_and_leaves_the_model_alone():
    from genlab.evaluate import dynamic_log_prob

    model = _tiny_lm(5, seed=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.tensor([0, 1, 2, 3] * 40).reshape(40, 4)  # a repeated pattern the untrained model does not know
    static, n = stream_log_prob(model, x, 2)
    same, _ = dynamic_log_prob(model, x, 2, lr=0.0)
    adapted, m = dynamic_log_prob(model, x, 2, lr=0.01)
    assert n == m == 160 and same == pytest.approx(static, rel=1e-6)
    assert adapted > static + 40  # learns the pattern while reading it: 40+ nats better
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="lr"):
        dynamic_log_prob(model, x, 2, lr=-1.0)
