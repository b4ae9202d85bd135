"""The ``memad`` command line: ``memad fit``, ``memad score`` and ``memad demo``.

Also run as ``python -m sklearn_memad``. One module per command (:mod:`.fit`, :mod:`.score`,
:mod:`.demo`), the parser (:mod:`.parser`), the exit codes (:mod:`.exit_codes`) and the
thresholds chosen on validation images (:mod:`.decisions`).
"""

from .main import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
