"""``python -m genlab`` (and ``torchrun -m genlab``): the ``genlab`` command."""

import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the command was still starting up
    print("genlab: interrupted", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
