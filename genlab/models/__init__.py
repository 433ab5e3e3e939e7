"""Model families. Importing this package registers each one (one line per family)."""

from . import vae  # noqa: F401
from . import gan  # noqa: F401
