"""Exit codes of the ``memad`` command, and the error that carries one.

Errors that a user can fix (a wrong path, an empty folder, a file that is not a model) print
one line on standard error and exit with a code that scripts can test:

====  ========================================================================================
code  meaning
====  ========================================================================================
0     success (``score`` also exits 0 when it flags anomalies)
1     unexpected internal error (``--debug`` shows the traceback)
2     usage: a wrong command line or option value (unknown backbone or layer, bad number)
3     data: a missing path, a folder without images, no readable image, an unwritable output;
      ``score``: an image that got no verdict (unreadable, too large), a row of scores.csv
      with the reason
4     model: the model file is missing, is not a sklearn_memad model, or comes from an
      incompatible version
5     setup: backbone weights or an optional package are not available on this machine
6     ``monitor``: an alarm, the scores drifted from the model's normal ones
130   interrupted (Ctrl-C, or SIGTERM during ``score``)
====  ========================================================================================
"""

__all__ = [
    "EXIT_ALARM",
    "EXIT_DATA",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_MODEL",
    "EXIT_OK",
    "EXIT_SETUP",
    "EXIT_USAGE",
    "CommandError",
    "OptionError",
    "SUMMARY",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_MODEL = 4
EXIT_SETUP = 5
EXIT_ALARM = 6
EXIT_INTERRUPTED = 130

#: One line for ``--help``.
SUMMARY = (
    "Exit codes: 0 ok, 1 internal error, 2 usage, 3 data (paths, images; score: an image "
    "without a verdict), 4 model file, "
    "5 setup (weights or packages missing), 6 monitor: drift alarm, 130 interrupted."
)


class CommandError(Exception):
    """An error the user can fix: printed as one line, exits with ``code``."""

    def __init__(self, message, code):
        super().__init__(message)
        self.code = code


class OptionError(ValueError):
    """A wrong option value or combination: the command line's usage error (exit code 2)."""
