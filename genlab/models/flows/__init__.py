"""Normalizing flows with exact likelihood: RealNVP, Glow, MAF and NSF (one file per family),
built from the bijections in ``transforms.py`` and ``splines.py`` (registered in :mod:`genlab.registry`)."""

from .base import FlowModel
from .glow import Glow
from .maf import MAF
from .nsf import NSF
from .realnvp import RealNVP

__all__ = ["FlowModel", "Glow", "MAF", "NSF", "RealNVP"]
