"""Run folders: what ``config.yaml`` holds and how a trained model is loaded back (no pickle)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import torch

from . import checkpoint as ckpt
from .data.spec import DataSpec
from .protocol import GenerativeModel, build_model

CONFIG_FILE = "config.yaml"
WEIGHTS = {"best": "best.safetensors", "last": "model.safetensors"}


class Run(NamedTuple):
    """A loaded run: ``model, config, spec = genlab.load_run(path)``."""

    model: GenerativeModel
    config: dict[str, Any]
    spec: DataSpec


def plain(obj: Any) -> Any:
    """Tuples -> lists and other YAML-safe conversions (via a JSON round trip)."""
    return json.loads(json.dumps(obj))


def run_config(
    model: str,
    model_kwargs: dict[str, Any],
    data: str,
    data_opts: dict[str, Any],
    spec: DataSpec,
    train: dict[str, Any],
) -> dict[str, Any]:
    """Everything needed to rebuild the model and repeat the run, as written to ``config.yaml``."""
    from . import __version__

    return plain(
        {
            "genlab_version": __version__,
            "model": model,
            "model_kwargs": model_kwargs,
            "data": data,
            "data_opts": data_opts,
            "spec": spec.to_dict(),
            "train": train,
        }
    )


#: What genlab writes into a run folder (train, eval, encode, figures): removed by ``--overwrite``
#: so that nothing of the old run (an eval.json, a figure) is taken for the new one.
RUN_FILES = (
    "config.yaml",
    "*.safetensors",
    "trainer-state*",
    "metrics.jsonl",
    "eval.json",
    "latents-*",
    "*.png",
    "samples.txt",
    "samples.wav",
)


def clear_run(path: str | os.PathLike) -> None:
    """Delete the files of an earlier run in ``path`` (:data:`RUN_FILES` and ``samples/``), and
    nothing else."""
    import shutil

    path = Path(path)
    for pattern in RUN_FILES:
        for f in path.glob(pattern):
            if f.is_file():
                f.unlink()
    if (path / "samples").is_dir():
        shutil.rmtree(path / "samples")


def load_run(path: str | os.PathLike, weights: str = "best", device: str | torch.device = "cpu") -> Run:
    """Load a run folder written by ``genlab train``: the model (in eval mode) with its ``best``
    validation weights (or ``"last"``), the config dict and the data spec."""
    path = Path(path)
    if not path.is_dir():
        raise ckpt.CheckpointError(f"run folder {str(path)!r} does not exist")
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {', '.join(WEIGHTS)}; got {weights!r}")
    if not (path / CONFIG_FILE).exists():
        raise ckpt.CheckpointError(
            f"{str(path)!r} is not a genlab run folder (no {CONFIG_FILE}); "
            "runs are written by 'genlab train' or genlab.Trainer(..., out_dir=)"
        )
    config = ckpt.read_yaml(path / CONFIG_FILE)
    if not isinstance(config, dict) or "model" not in config or "spec" not in config:
        raise ckpt.CheckpointError(f"{str(path / CONFIG_FILE)!r} is not a genlab run config (needs 'model' and 'spec')")
    spec = DataSpec.from_dict(config["spec"])
    model = build_model(config["model"], spec, **(config.get("model_kwargs") or {}))
    file = path / WEIGHTS[weights]
    if weights == "best" and not file.exists():
        file = path / WEIGHTS["last"]
    tensors, _ = ckpt.load_tensors(file)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ckpt.CheckpointError(
            f"{str(file)!r} does not fit model {config['model']!r}: {str(e).splitlines()[0]}"
        ) from None
    return Run(model.to(device).eval(), config, spec)
