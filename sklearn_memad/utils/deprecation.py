"""Names that moved: the old import path keeps working for a while, with a FutureWarning."""

import importlib
import warnings

__all__ = ["moved_names"]


def moved_names(module_name, moves):
    """A module ``__getattr__`` that finds ``moves[name]`` (a new module path) and warns.

    Use as ``__getattr__ = moved_names(__name__, {"old_name": "sklearn_memad.new_home"})``.
    """

    def __getattr__(name):
        if name not in moves:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        new_home = moves[name]
        warnings.warn(
            f"{module_name}.{name} moved to {new_home}.{name}; import it from there. The old "
            "path will be removed in sklearn_memad 0.3.",
            FutureWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(new_home), name)

    return __getattr__
