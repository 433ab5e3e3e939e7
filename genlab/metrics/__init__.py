"""Metrics on plain arrays/tensors and on models."""

from .likelihood import bits_per_dim, likelihood_metrics

__all__ = ["bits_per_dim", "likelihood_metrics"]
