"""Model families. Importing this package registers each one (one line per family)."""

from . import (
    gan,  # noqa: F401
    made,  # noqa: F401
    pixelcnn,  # noqa: F401
    transformer,  # noqa: F401
    vae,  # noqa: F401
    wavenet,  # noqa: F401
)
from .flows import FlowModel  # noqa: F401
