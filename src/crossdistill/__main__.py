"""``python -m crossdistill``: the same as the ``crossdistill`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
