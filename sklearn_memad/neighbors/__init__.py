"""Coreset selection and nearest-neighbour search over memory banks."""

from ._coreset import greedy_coreset, project_for_coreset
from ._merge import cover_radii, reduce_coreset
from ._search import NearestNeighborSearch

__all__ = [
    "NearestNeighborSearch",
    "cover_radii",
    "greedy_coreset",
    "project_for_coreset",
    "reduce_coreset",
]
