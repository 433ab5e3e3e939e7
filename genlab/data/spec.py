"""What a data set is, in the few numbers a model needs to size itself (shapes, levels, classes),
and for a multimodal data set the same numbers for each modality (one batch key each)."""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["image", "vector", "tokens", "audio", "multimodal"]


@dataclass(frozen=True)
class DataSpec:
    """Description of a data set, stored in every run's config so a model can be rebuilt.

    ``shape`` is the per-example shape of ``"x"`` (images ``(C, H, W)``, vectors ``(D,)``, tokens
    ``(T,)``). ``levels`` is the number of discrete values per dimension (17 for digits, 2 for binary
    shapes, 256 for 8-bit images; ``None`` for continuous data); discrete images are handed to models
    as floats ``level / (levels - 1)`` in ``value_range`` = (0, 1). ``vocab`` lists token strings
    for text; ``factor_names``/``factor_sizes`` describe ground-truth generative factors.

    ``modalities`` maps each batch key of a multimodal data set (``"x"`` image, ``"text"`` caption
    tokens, ``"audio"`` clip) to a single-modality sub-spec: its kind, shape, dtype, levels, vocab,
    value range, and ``extra`` (``text_len``, ``sample_rate`` ...). It is empty for single-modality
    data, whose one modality ``"x"`` is the spec itself. A multimodal spec keeps ``kind="multimodal"``
    with the top-level ``shape``/``levels`` describing ``"x"``; configs written before the field
    existed load with it empty, and :meth:`modality` rebuilds their sub-specs.
    """

    name: str
    kind: Kind
    shape: tuple[int, ...]
    dtype: str = "float32"
    value_range: tuple[float, float] | None = (0.0, 1.0)
    levels: int | None = None
    num_classes: int | None = None
    class_names: tuple[str, ...] | None = None
    vocab: tuple[str, ...] | None = None
    factor_names: tuple[str, ...] | None = None
    factor_sizes: tuple[int, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    modalities: dict[str, DataSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.modalities, dict):
            raise ValueError(f"data spec modalities must be a dict of batch key -> spec; got {self.modalities!r}")
        subs = {}
        for key, sub in self.modalities.items():
            if isinstance(sub, dict):
                sub = DataSpec.from_dict(sub)
            if not isinstance(key, str) or not isinstance(sub, DataSpec):
                raise ValueError(f"modality {key!r} of data spec {self.name!r} is {sub!r}; expected a DataSpec or dict")
            if sub.kind == "multimodal" or sub.modalities:
                raise ValueError(f"modality {key!r} of data spec {self.name!r} is itself multimodal; expected one kind")
            subs[key] = sub
        object.__setattr__(self, "modalities", subs)  # frozen: sub-specs given as dicts become DataSpecs

    @property
    def dim(self) -> int:
        """Number of scalar dimensions D of one example (used for bits/dim)."""
        return int(math.prod(self.shape))

    @property
    def vocab_size(self) -> int | None:
        return None if self.vocab is None else len(self.vocab)

    @property
    def modality_keys(self) -> tuple[str, ...]:
        """The batch keys holding the data's modalities: those of ``modalities``; for a spec written
        before that field, ``extra["modalities"]`` (old ``shapes-captions`` runs) or else ``("x",)``."""
        if self.modalities:
            return tuple(self.modalities)
        return tuple(self.extra.get("modalities") or ("x",))

    def modality(self, key: str) -> DataSpec:
        """The single-modality spec of batch key ``key`` (``"x"``, ``"text"``, ``"audio"`` ...).

        A single-modality spec is its own ``"x"``. A multimodal spec written before ``modalities``
        existed gets its ``"x"`` (an image with the top-level shape and levels) and ``"text"`` (tokens
        of ``extra["text_len"]`` over ``vocab``) rebuilt from the old fields. Unknown keys raise KeyError."""
        if key in self.modalities:
            return self.modalities[key]
        if not self.modalities and key in self.modality_keys:
            if self.kind != "multimodal":
                return self
            if key == "x":
                return dataclasses.replace(self, name="x", kind="image", vocab=None, extra={})
            if key == "text" and self.vocab and "text_len" in self.extra:
                return DataSpec(
                    name="text",
                    kind="tokens",
                    shape=(int(self.extra["text_len"]),),
                    dtype="int64",
                    value_range=None,
                    levels=len(self.vocab),
                    vocab=self.vocab,
                    extra={"text_len": int(self.extra["text_len"])},
                )
        raise KeyError(
            f"data set {self.name!r} has no modality {key!r}; its modalities: {', '.join(self.modality_keys)}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-safe dict (tuples become lists; each modality's spec a nested dict)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "modalities":
                v = {k: sub.to_dict() for k, sub in v.items()}
            d[f.name] = list(v) if isinstance(v, tuple) else copy.deepcopy(v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        """Inverse of :meth:`to_dict`; a dict without ``modalities`` (older configs) gets none."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"data spec has unknown keys {sorted(unknown)}; expected a subset of {sorted(names)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k != "modalities"}
        return cls(**kw, modalities=d.get("modalities") or {})  # sub-spec dicts are rebuilt by __post_init__
