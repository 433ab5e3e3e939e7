"""Ethics audits of a trained generator (issue 15): training-data extraction, canary exposure,
membership inference, bias probes and amplification, hallucination by latent search.

Each check lives in its own module (:mod:`.text`, :mod:`.membership`, :mod:`.amplification`,
:mod:`.hallucination`); :func:`run_audit` (``genlab audit RUN --checks ...``) runs the ones that
apply to a run and writes ``audit.json`` with the pictures next to it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..runs import AUDIT_FILE  # written into the run folder, merged with an earlier one check by check

#: The checks of ``genlab audit``, in the order they run.
CHECKS = ("membership", "extraction", "exposure", "bias-templates", "amplification", "hallucination")


def applicable_checks(model: Any, spec: Any, *, templates: bool = False) -> dict[str, str | None]:
    """Each check of :data:`CHECKS` mapped to None where it applies to ``model`` (trained on data
    ``spec``), else to the reason it does not: ``membership`` needs a likelihood; ``extraction``
    and ``bias-templates`` a text model over a tokenized text file (``bias-templates`` also a
    template file); ``exposure`` a text trained with ``--data-opt canaries=N``; ``amplification``
    a sampler on data whose factors can be read back from samples (``shapes-captions``, best
    with ``--data-opt correlate=...``); ``hallucination`` a decoder from latents over images."""
    from ..metrics.coherence import has_factor_readers

    caps = model.capabilities
    key = getattr(model, "data_key", "x")
    try:
        tokens = spec.modality(key).kind == "tokens"
    except KeyError:
        tokens = False
    text_file = tokens and spec.extra.get("tokenizer") in ("char", "word")
    decoder = caps.decode or type(model).__name__ in ("DCGAN", "WGANGP")
    why: dict[str, str | None] = {
        "membership": None if model.likelihood != "none" else "the model has no likelihood",
        "extraction": None if text_file and caps.sample else "needs a text model trained on a text file",
        "exposure": None if isinstance(spec.extra.get("canaries"), dict) else "needs --data-opt canaries=N at training",
        "bias-templates": None
        if text_file and templates
        else ("needs --templates FILE" if text_file else "needs a text model trained on a text file"),
        "amplification": None
        if caps.sample and has_factor_readers(spec)
        else "needs a sampler on data whose factors can be read back (shapes-captions)",
        "hallucination": None
        if decoder and spec.kind in ("image",) and not getattr(model, "conditional", False)
        else "needs an unconditional decoder from latents over images (vae, dcgan, flows)",
    }
    return why


def run_audit(
    run: str | os.PathLike,
    checks: Sequence[str] | None = None,
    *,
    weights: str = "best",
    templates: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    n: int = 1000,
    seed: int = 0,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the ethics audits ``checks`` (default: every applicable one of :data:`CHECKS`) on the run
    folder ``run`` and write ``audit.json`` (``out``, default ``RUN/audit.json``; merged check by
    check with an earlier one) with the pictures (``hallucination.png``, ``exposure.png``) beside it.

    ``n``: examples per side for membership, samples for extraction and amplification (capped at
    sensible sizes per check); ``templates``: the prompt-pair file of ``bias-templates``;
    ``reference``: a smaller run of the same text, the reference model of extraction's ratio signal.
    Returns the new results; a check named in ``checks`` that does not apply is a one-line
    ValueError saying why."""
    from ..data import load_dataset
    from ..runs import load_run, saved_data_opts

    model, cfg, spec = load_run(run, weights=weights)
    model.eval()
    why = applicable_checks(model, spec, templates=templates is not None)
    if checks is None:
        chosen = [c for c in CHECKS if why[c] is None]
    else:
        chosen = list(dict.fromkeys(checks))
        for c in chosen:
            if c not in CHECKS:
                raise ValueError(f"unknown audit check {c!r}; expected one of {', '.join(CHECKS)}")
            if why[c] is not None:
                raise ValueError(f"check {c!r} does not apply to run {str(run)!r} ({cfg['model']}): {why[c]}")
    if not chosen:
        raise ValueError(
            f"no audit check applies to run {str(run)!r} ({cfg['model']}); "
            + "; ".join(f"{c}: {w}" for c, w in why.items())
        )
    opts = saved_data_opts(cfg)
    splits: dict[str, Any] = {}

    def split(name: str) -> Any:
        if name not in splits:
            splits[name] = load_dataset(cfg["data"], name, **opts)
        return splits[name]

    path = Path(out) if out is not None else Path(run) / AUDIT_FILE
    if path.exists():  # merged into, so it must be an earlier audit's: a user's own file is never rewritten
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError):
            earlier = None
        if not isinstance(earlier, dict) or "run" not in earlier:
            raise ValueError(f"{str(path)!r} exists and is not an audit.json of genlab audit; choose another --out")
    folder = path.parent
    results: dict[str, Any] = {}
    for check in chosen:
        log(f"audit: {check} ...")
        t0 = time.perf_counter()
        if check == "membership":
            from .membership import membership_audit

            res = membership_audit(model, split("train"), split("test"), n=n, seed=seed)
        elif check == "extraction":
            from .text import extraction_audit

            ref = load_run(reference, weights=weights)[0].eval() if reference is not None else None
            t = int(model.spec.shape[0])  # the paper's 32-token prompts and matches, shorter for short contexts
            res = extraction_audit(model, split("train"), samples=min(n, 200), prompted=min(n, 200), reference=ref,
                                   prompt_tokens=min(32, t // 4), min_tokens=min(32, t // 2), seed=seed)  # fmt: skip
        elif check == "exposure":
            from .text import exposure_audit, plot_exposure

            res = exposure_audit(model, spec, seed=seed)
            res["png"] = plot_exposure(res, folder / "exposure.png")
        elif check == "bias-templates":
            from .text import template_bias_audit

            res = template_bias_audit(model, templates, seed=seed)  # type: ignore[arg-type]
        elif check == "amplification":
            from .amplification import amplification_audit_model

            options = {"mean": True} if "mean" in model.capabilities.sample_options else None
            res = amplification_audit_model(model, split("train"), n=min(n, 2000), seed=seed, sample_options=options)
        else:
            from .hallucination import hallucination_audit

            res = hallucination_audit(model, split("test"), split("train"), seed=seed, out_dir=folder,
                                      factor=_downscale_factor(spec))  # fmt: skip
        res["seconds"] = round(time.perf_counter() - t0, 2)
        results[check] = res
        _write_merged(path, {check: res, "run": str(run), "weights": weights})  # a later failure loses nothing
        log(f"audit: {check} done in {res['seconds']:.1f} s")
    results["written"] = str(path)
    return results


def _write_merged(path: Path, new: dict[str, Any]) -> None:
    """``new`` merged key by key into the JSON file ``path``, written atomically (temp file, then
    rename: a crash leaves the previous file whole)."""
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(new)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _downscale_factor(spec: Any) -> int:
    """The largest of 8, 4, 2 that divides the image side and leaves at least 2x2 pixels."""
    side = min(int(spec.shape[-1]), int(spec.shape[-2]))
    return next((f for f in (8, 4, 2) if side % f == 0 and side // f >= 2), 1)
