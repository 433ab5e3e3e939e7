"""eval.json grows: a later evaluation of the same model adds its metrics and keeps the earlier ones."""

import json

import pytest
import torch

import genlab
from genlab.evaluate import evaluate, merge_eval, model_fingerprint, write_eval


def test_merge_keeps_the_earlier_keys_and_replaces_the_rewritten_ones():
    old = {"run": "r", "split": "test", "data": "digits", "elbo_nats": -90.0, "fid": 3.0}
    new = {"run": "r", "split": "test", "data": "digits", "fid": 2.5, "kid_mean": 0.1}
    merged, notes = merge_eval(old, new)
    assert merged == {"run": "r", "split": "test", "data": "digits", "elbo_nats": -90.0, "fid": 2.5, "kid_mean": 0.1}
    assert notes == []
    assert merge_eval(None, new) == (new, [])


@pytest.mark.parametrize(
    "change", [{"split": "val"}, {"data": "shapes"}, {"run": "other"}, {"model_sha256": "b"}], ids=str
)
def test_an_evaluation_of_another_model_or_split_replaces_the_file(change):
    old = {"run": "r", "split": "test", "data": "digits", "model_sha256": "a", "elbo_nats": -90.0}
    new = {"run": "r", "split": "test", "data": "digits", "model_sha256": "a", "fid": 2.5, **change}
    merged, notes = merge_eval(old, new)
    if change == {"run": "other"}:  # the same weights moved elsewhere: still the same numbers
        assert merged["elbo_nats"] == -90.0 and notes == []
    else:
        assert merged == new and "replaced" in notes[0] and next(iter(change)) in notes[0]


def test_model_fingerprint_tracks_the_weights():
    spec = genlab.load_dataset("digits", "test").spec
    a = genlab.build_model("vae", spec, z_dim=2, hidden=[8])
    b = genlab.build_model("vae", spec, z_dim=2, hidden=[8])
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        next(b.parameters()).view(-1)[0] += 1e-6
    assert model_fingerprint(a) != model_fingerprint(b)


def test_write_eval_merges_later_metrics_atomically(tmp_path, monkeypatch):
    data = genlab.load_dataset("digits", "test")
    model = genlab.build_model("vae", data.spec, z_dim=2, hidden=[8]).eval()
    path = tmp_path / "eval.json"
    ident = {"run": "r", "weights": "best", "split": "test", "data": "digits"}
    first = evaluate(model, data, ["likelihood"])
    write_eval({**ident, **first}, path, model=model)
    second = evaluate(model, data, ["recon"])
    written, notes = write_eval({**ident, **second}, path, model=model)
    on_disk = json.loads(path.read_text())
    assert on_disk == written and notes == []
    assert on_disk["elbo_nats"] == pytest.approx(first["elbo_nats"]) and "recon_mse" in on_disk
    assert on_disk["model_sha256"] == model_fingerprint(model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]  # no temporary left behind

    # A write that dies half way leaves the earlier file whole.
    import genlab.checkpoint as ckpt

    def broken_dump(obj, f, **kw):
        f.write('{"half": ')
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.json, "dump", broken_dump)
    with pytest.raises(OSError):
        write_eval({**ident, "fid": 1.0}, path, model=model)
    assert json.loads(path.read_text()) == on_disk
    monkeypatch.undo()

    # Another model's evaluation (retrained weights) replaces it rather than mixing the two.
    other = genlab.build_model("vae", data.spec, z_dim=2, hidden=[8]).eval()
    with torch.no_grad():
        next(other.parameters()).add_(0.1)  # (evaluate reseeds the global RNG: a rebuild is the same net)
    written, notes = write_eval({**ident, **evaluate(other, data, ["recon"])}, path, model=other)
    assert "elbo_nats" not in written and "model_sha256" in notes[0]
    # NaN is not JSON: written as null.
    written, notes = write_eval({**ident, "fid": float("nan")}, path, model=other)
    assert json.loads(path.read_text())["fid"] is None and notes == []
    # A file genlab eval did not write is refused and left as it was, never replaced.
    for text in ("{not json", '{"my": "notes"}', "[1, 2]"):
        path.write_text(text)
        with pytest.raises(ValueError, match="not an eval.json"):
            write_eval({**ident, "fid": 1.0}, path)
        assert path.read_text() == text
