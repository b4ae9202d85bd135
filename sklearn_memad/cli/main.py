"""``memad``: parse the command line, run the command, turn errors into exit codes."""

import sys

from ..datasets import ImageFolderError
from .exit_codes import (
    EXIT_DATA,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    CommandError,
    OptionError,
)
from .parser import build_parser

__all__ = ["main"]


def main(argv=None):
    """Run the command line; return the exit code.

    Parameters
    ----------
    argv : list of str, default=None
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    code : int
        See :mod:`sklearn_memad.cli.exit_codes`.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.run(args)
    except CommandError as exc:
        print(f"memad {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except OptionError as exc:
        print(f"memad {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ImageFolderError as exc:
        print(f"memad {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except KeyboardInterrupt as exc:
        detail = f"; {exc}" if str(exc) else ""  # what the command kept, when it says
        print(f"memad {args.command}: interrupted{detail}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"memad {args.command}: unexpected error: {type(exc).__name__}: {exc} "
            "(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR
