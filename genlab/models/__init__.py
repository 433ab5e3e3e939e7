"""Model families. Importing this package registers each one (one line per family)."""

from . import vae  # noqa: F401
from . import transformer  # noqa: F401
from . import made  # noqa: F401
from . import pixelcnn  # noqa: F401
from . import wavenet  # noqa: F401
from .flows import FlowModel  # noqa: F401
from . import gan  # noqa: F401
