"""``python -m sklearn_memad fit|score|demo``: see :mod:`sklearn_memad.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
