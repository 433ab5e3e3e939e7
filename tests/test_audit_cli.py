"""``genlab audit`` end to end on a tiny VAE: the checks that apply run, audit.json is merged check by
check, and a check that does not apply (or does not exist) is a one-line error."""

from __future__ import annotations

import json

import pytest

from genlab.cli import main


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "vae-digits"
    args = ["train", "vae", "--data", "digits", "--out", str(out), "--quiet", "--set", "steps=40"]
    assert main([*args, "--set", "eval_every=40", "--set", "sample_every=40"]) == 0
    return out


def test_audit_writes_and_merges_audit_json(vae_run, capsys):
    assert main(["audit", str(vae_run), "--checks", "membership", "--n", "100"]) == 0
    first = json.loads((vae_run / "audit.json").read_text())
    assert 0.0 <= first["membership"]["auc"] <= 1.0 and len(first["membership"]["auc_ci"]) == 2
    assert "membership: AUC" in capsys.readouterr().out
    assert main(["audit", str(vae_run), "--checks", "hallucination"]) == 0
    both = json.loads((vae_run / "audit.json").read_text())
    assert both["membership"] == first["membership"]  # kept, not replaced
    assert 0.0 <= both["hallucination"]["fit_fraction"] <= 1.0
    assert (vae_run / "hallucination.png").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--checks", "nope"], "--checks 'nope': expected a comma-separated subset of membership"),
        (["--checks", "exposure"], "check 'exposure' does not apply to run"),
        (["--checks", "extraction"], "needs a text model trained on a text file"),
        (["--templates", "missing.txt"], "--templates 'missing.txt' does not exist"),
        (["--n", "2"], "--n must be >= 4; got 2"),
    ],
)
def test_audit_bad_input_is_one_line(vae_run, extra, message, capsys):
    assert main(["audit", str(vae_run), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
