"""Transformers on patch-feature grids."""

from ._aggregation import LocalAggregation
from ._projection import RandomProjection

__all__ = ["LocalAggregation", "RandomProjection"]
