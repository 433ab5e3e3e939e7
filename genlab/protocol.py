"""The protocol every genlab model follows: :class:`GenerativeModel`, and what it can do as data
(:class:`Capabilities`).

A model is a ``torch.nn.Module`` subclass of :class:`GenerativeModel`. Its typed constructor
arguments *are* its config: :func:`genlab.registry.build_model` passes the data set's
:class:`~genlab.data.DataSpec` plus user keyword arguments, and checkpoints store
``{name, kwargs, weights}`` so the model can be rebuilt without pickle.

The command line, the figures and the evaluation never probe a model (no ``hasattr``, no signature
inspection): they read ``model.capabilities`` and ``model.likelihood``, and call the methods below.
This module imports no model family and nothing above it (registry, trainer, CLI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from .data.spec import DataSpec
from .nn import one_hot

#: What ``log_prob`` and ``encode`` take and ``sample`` returns: one tensor for a model of one
#: modality; for a multimodal model a dict ``{modality key: tensor}`` (any non-empty subset as input).
Modalities = Tensor | dict[str, Tensor]

#: Keyword options of ``sample`` that the CLI and the figures know how to pass.
SAMPLE_OPTIONS = (
    "mean",
    "temperature",
    "top_k",
    "top_p",
    "length",
    "prefix_embeds",
    "use_cache",
    "steps",  # diffusion: DDIM steps
    "eta",  # diffusion: DDIM noise (0 deterministic, 1 ancestral)
    "guidance",  # diffusion: classifier-free guidance scale
)
#: End-of-training figures (see :func:`genlab.viz.run_figures`).
FIGURES = ("samples", "samples-mean", "reconstructions", "traversal", "interpolation", "density")


@dataclass(frozen=True)
class Capabilities:
    """What a model family can do, declared once on its class (``capabilities = Capabilities(...)``).

    Fields:
        sample: ``sample`` draws from the model.
        encode: ``encode`` maps data to a representation [B, z_dim] (a latent variable or features).
        decode: ``decode(z, cond, mean=...)`` maps latents back to data (the inverse direction of
            ``encode``; VAEs and flows).
        reconstruct: ``reconstruct(x, cond)`` returns the model's reconstruction of x.
        conditional: the family can be built with ``conditional=True`` (class labels).
        iwae: ``log_prob(x, cond, k=...)`` takes the number of importance samples k (IWAE bound).
        sample_options: keyword options of ``sample`` beyond ``generator``, from :data:`SAMPLE_OPTIONS`
            (``"mean"``: decoder means; ``"temperature"``; ``"top_k"``/``"top_p"``; ...).
        figures: end-of-training figures the model can draw, from :data:`FIGURES`; which of them are
            drawn also depends on the data (images; 2-D vectors for ``"density"``).
        modalities: the batch keys of a multimodal model (``log_prob``/``encode`` take and ``sample``
            returns a dict over them); empty for a model of one tensor (``model.data_key``).
        targets: the modalities ``translate`` can produce (None: every one of ``modalities``); e.g. a
            captioner of images has ``("text",)``. :meth:`generates` reads it.
        notes: one short line for ``genlab models`` (how sampling works, what ``encode`` returns).
    """

    sample: bool = True
    encode: bool = False
    decode: bool = False
    reconstruct: bool = False
    conditional: bool = False
    iwae: bool = False
    sample_options: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    modalities: tuple[str, ...] = ()
    targets: tuple[str, ...] | None = None
    notes: str = ""

    def generates(self, key: str) -> bool:
        """Whether ``translate`` can produce modality ``key``."""
        return key in (self.modalities if self.targets is None else self.targets)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("sample_options", self.sample_options, SAMPLE_OPTIONS),
            ("figures", self.figures, FIGURES),
        ):
            bad = [v for v in value if v not in allowed]
            if bad:
                raise ValueError(f"Capabilities.{name}: unknown {bad[0]!r}; expected some of {', '.join(allowed)}")

    def describe(self) -> str:
        """One readable line, e.g. ``sample (temperature), encode, decode, conditional; exact inverse``."""
        parts = []
        if self.sample:
            parts.append("sample" + (f" ({', '.join(self.sample_options)})" if self.sample_options else ""))
        for name in ("encode", "decode", "reconstruct", "iwae", "conditional"):
            if getattr(self, name):
                parts.append(name)
        if self.modalities:
            parts.append(f"modalities {'+'.join(self.modalities)}")
        line = ", ".join(parts) or "none"
        return f"{line}; {self.notes}" if self.notes else line


class GenerativeModel(nn.Module):
    """Base class: one generative model of p(x) or p(x | c).

    Subclasses implement :meth:`loss` and whichever of :meth:`log_prob`, :meth:`sample`,
    :meth:`encode`, :meth:`decode` and :meth:`reconstruct` they support, and say which in
    ``capabilities``; the unsupported ones raise ``NotImplementedError`` with a reason.
    ``likelihood`` says what ``log_prob`` returns: ``"exact"`` log-likelihood, a lower ``"bound"``
    (ELBO / IWAE), or ``"none"``. ``discrete`` says whether ``log_prob`` is a log probability *mass*
    on the data's levels (True) or a log *density* of the dequantized data in [0, 1] (False); the
    bits-per-dimension helper needs it to make the two comparable.
    """

    likelihood: ClassVar[Literal["exact", "bound", "none"]] = "none"
    #: What the model can do, as data (see :class:`Capabilities`); ``genlab models`` prints it.
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: Call ``loss(batch)`` afresh before stepping each loss key after the first (alternating
    #: updates, e.g. a GAN's generator against the just-updated discriminator).
    recompute_loss_per_group: ClassVar[bool] = False
    #: Name under which the class is registered (set by :mod:`genlab.registry` when it loads the class).
    registry_name: ClassVar[str] = ""
    #: Training settings this family needs to train in about a minute on a CPU (e.g. a smaller
    #: batch for sequence models); ``genlab train`` applies them under the user's settings.
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: Options whose default has changed, mapped to their value before the change: a run folder
    #: written before ``config.yaml`` recorded every option (config version 1 saved only those set
    #: by hand) is rebuilt with these, so it still loads (see :func:`genlab.runs.saved_model_kwargs`).
    legacy_defaults: ClassVar[dict[str, Any]] = {}

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.spec = spec
        self.conditional = False
        #: Size K of the condition vector (classes of a conditional model), 0 when unconditional.
        self.c_dim = 0
        self.discrete = False
        #: The batch key holding what the model models ("x"; a language model on captions: "text").
        self.data_key = "x"

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Training objective(s) for one batch: ``{"loss": scalar}`` for one optimizer, or one key
        per parameter group (see :meth:`parameter_groups`). Extra keys are logged only."""
        raise NotImplementedError(f"{type(self).__name__} does not define a training loss")

    def log_prob(self, x: Modalities, cond: Tensor | None = None) -> Tensor:
        """[B] log-likelihood of each example in nats (exact, or a lower bound; see ``likelihood``).
        A multimodal model takes a dict of any non-empty subset of its modalities."""
        raise NotImplementedError(f"{type(self).__name__} has no likelihood (likelihood='none')")

    def sample(self, n: int, cond: Tensor | None = None, *, generator: torch.Generator | None = None) -> Modalities:
        """[n, *data_shape] samples in the same space and range as the training data (a multimodal
        model: a dict with one such tensor per modality)."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample")

    def encode(self, x: Modalities, cond: Tensor | None = None) -> Tensor:
        """[B, z_dim] representation of each example (a multimodal model takes a dict of any
        non-empty subset of its modalities)."""
        raise NotImplementedError(f"{type(self).__name__} has no encoder")

    def decode(
        self, z: Tensor, cond: Tensor | None = None, *, mean: bool = True, generator: torch.Generator | None = None
    ) -> Tensor:
        """[B, *data_shape] data for latents z [B, z_dim] (the direction opposite to :meth:`encode`):
        the decoder's mean E[x | z] (``mean=True``) or one draw from p(x | z)."""
        raise NotImplementedError(f"{type(self).__name__} has no decoder")

    def reconstruct(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """[B, *data_shape] the model's reconstruction of x, in the data's space and range."""
        raise NotImplementedError(f"{type(self).__name__} cannot reconstruct")

    def validation_metrics(self, data: Any) -> dict[str, float] | None:
        """Optional validation for models without a likelihood: metrics on ``data`` (a validation
        split), the first of which the trainer minimizes to select the best weights. Default None:
        the trainer falls back to the mean training loss."""
        return None

    # --- conditioning, one copy for every family -----------------------------------------------
    def _init_conditioning(self, conditional: bool) -> None:
        """Set ``conditional`` and ``c_dim`` (the number of classes, or 0) from the spec.
        ``conditional=True`` on data without class labels is a one-line ``ValueError``."""
        if conditional and not self.spec.num_classes:
            raise ValueError(f"conditional=True needs class labels; data set {self.spec.name!r} has none")
        self.conditional = bool(conditional)
        self.c_dim = int(self.spec.num_classes) if conditional else 0  # type: ignore[arg-type]

    def cond_embedding(self, cond: Tensor | None, ref: Tensor) -> Tensor | None:
        """The condition as a vector [B, c_dim] on ``ref``'s device and dtype: one-hot of class ids
        [B] (long), or a float condition [B, c_dim] as given. None for an unconditional model; a
        conditional model called without ``cond`` raises a ``ValueError`` that says so."""
        if not self.conditional:
            return None
        if cond is None:
            raise ValueError(f"this {type(self).__name__} is conditional: pass cond (class ids [B] or one-hot [B, K])")
        return one_hot(cond.to(ref.device), self.c_dim, ref.dtype)

    # --- helpers shared by the trainer and the CLI ----------------------------------------------
    def on_train_data(self, n: int) -> None:
        """Told by the Trainer how many training examples there are (before the first step). Default:
        nothing; an objective that needs the data set's size (beta-TCVAE's ``mss`` estimator) reads it."""

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters stepped by each loss key. Default: every parameter under ``"loss"``."""
        return {"loss": [p for p in self.parameters() if p.requires_grad]}

    def optimizer_settings(self) -> dict[str, dict[str, Any]]:
        """Per loss key AdamW settings. ``default_lr``/``default_betas``: the family's defaults, used
        where the training config leaves ``lr``/``beta1``/``beta2`` unset (None), e.g. a GAN's
        ``{"generator": {"default_lr": 2e-4, "default_betas": (0.5, 0.999)}}``; any AdamW keyword
        (``lr``, ``betas``, ...) is fixed for that group whatever the training config says, so use
        it only for what the user set on the model itself. The schedule scales each ``lr``."""
        return {}

    def condition(self, batch: dict[str, Tensor]) -> Tensor | None:
        """What this model conditions on in ``batch`` (``"cond"``, else class ids ``"y"``), or None."""
        if not self.conditional:
            return None
        if "cond" in batch:
            return batch["cond"]
        if "y" in batch:
            return batch["y"]
        raise KeyError("conditional model needs 'cond' or 'y' in the batch; the data set has neither")

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")
