"""genlab: deep generative models across modalities with one protocol, trainer, evaluation and CLI."""

__version__ = "0.1.0"

from .data import list_datasets, load_dataset
from .data.spec import DataSpec
from .evaluate import evaluate
from .protocol import Capabilities, GenerativeModel
from .registry import build_model, list_models, register
from .runs import load_run
from .train import TrainConfig, Trainer

__all__ = [
    "Capabilities",
    "DataSpec",
    "GenerativeModel",
    "TrainConfig",
    "Trainer",
    "build_model",
    "evaluate",
    "list_datasets",
    "list_models",
    "load_dataset",
    "load_run",
    "register",
]
