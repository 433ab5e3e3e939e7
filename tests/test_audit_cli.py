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


def test_audit_text_checks_on_a_canary_run(tmp_path, capsys):
    rng = __import__("numpy").random.default_rng(0)
    words = ["the", "licensee", "may", "copy", "and", "modify", "this", "program", "under", "terms"]
    text = "\n".join(" ".join(rng.choice(words, 8)) for _ in range(600)) + "\n"
    data = tmp_path / "corpus.txt"
    data.write_text(text)
    run = tmp_path / "lm"
    args = ["train", "transformer", "--data", str(data), "--out", str(run), "--quiet", "--data-opt", "block_size=32"]
    args += ["--data-opt", "canaries=2", "--data-opt", "repeats=5", "--data-opt", "canary_digits=3"]
    args += ["--set", "d_model=16", "--set", "n_layers=1", "--set", "n_heads=2", "--set", "steps=20"]
    assert main(args) == 0
    templates = tmp_path / "pairs.txt"
    templates.write_text("# a pair per line\nthe licensee may | the program may\n")
    args = ["audit", str(run), "--checks", "exposure,extraction,bias-templates", "--templates", str(templates)]
    assert main([*args, "--n", "8"]) == 0
    res = json.loads((run / "audit.json").read_text())
    canaries = res["exposure"]["canaries"]
    assert sum(c["inserted"] for c in canaries) == 2 and res["exposure"]["method"] == "enumerate"
    assert all(0.0 <= c["exposure"] <= res["exposure"]["log2_space"] + 1e-9 for c in canaries)
    assert "extraction" in res and len(res["bias-templates"]["pairs"]) == 1
    assert (run / "exposure.png").exists()
    out = capsys.readouterr().out
    assert "exposure: log2|R|" in out and "bias-templates: 'the licensee may' vs 'the program may'" in out


def test_audit_never_rewrites_a_users_own_file(vae_run, tmp_path, capsys):
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "numbers"}\n')
    assert main(["audit", str(vae_run), "--checks", "membership", "--n", "20", "--out", str(mine)]) == 2
    assert "is not an audit.json of genlab audit" in capsys.readouterr().err
    assert mine.read_text() == '{"my": "numbers"}\n'
