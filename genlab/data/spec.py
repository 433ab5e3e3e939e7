"""What a data set is, in the few numbers a model needs to size itself (shapes, levels, classes)."""

from __future__ import annotations

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

    @property
    def dim(self) -> int:
        """Number of scalar dimensions D of one example (used for bits/dim)."""
        return int(math.prod(self.shape))

    @property
    def vocab_size(self) -> int | None:
        return None if self.vocab is None else len(self.vocab)

    def to_dict(self) -> dict[str, Any]:
        """A YAML/JSON-safe dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"data spec has unknown keys {sorted(unknown)}; expected a subset of {sorted(names)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)
