"""Grids to patch anomaly scores inside the graph: aggregation, projection, the detectors."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..detectors import DFKDEDetector, PaDiMDetector, PatchCoreDetector
from ..transformers import LocalAggregation, RandomProjection

__all__ = ["DETECTORS", "MIDDLE_STEPS"]


class Aggregation(nn.Module):
    def __init__(self, step):
        super().__init__()
        self.size = int(step.size)

    def forward(self, grids):
        if self.size == 1 or grids.shape[1] * grids.shape[2] == 1:
            return grids
        pooled = F.avg_pool2d(
            grids.permute(0, 3, 1, 2),
            self.size,
            stride=1,
            padding=self.size // 2,
            count_include_pad=False,
        )
        return pooled.permute(0, 2, 3, 1)


class Projection(nn.Module):
    def __init__(self, step):
        super().__init__()
        self.channels = step.method == "channels"
        if self.channels:
            self.register_buffer("index", torch.as_tensor(step.channels_, dtype=torch.long))
        else:
            components = step.projection_.components_
            components = components.toarray() if hasattr(components, "toarray") else components
            matrix = torch.from_numpy(np.asarray(components, dtype=np.float64).T.copy())
            self.register_buffer("matrix", matrix)

    def forward(self, grids):
        if self.channels:
            return grids[..., self.index]
        # float64 products rounded to float32, as the Python projection computes them.
        return torch.matmul(grids.double(), self.matrix).float()


class PaDiMScores(nn.Module):
    """Mahalanobis distances with each position's dense lower-triangular whitening factor."""

    def __init__(self, detector):
        super().__init__()
        h, w, d = detector.mean_.shape
        self.grid = (h, w)
        self.register_buffer("mean", torch.from_numpy(detector.mean_.reshape(h * w, d).copy()))
        self.register_buffer("factor", torch.from_numpy(detector.whitening_matrices()))

    def forward(self, grids):
        h, w = self.grid
        centred = grids.reshape(-1, h * w, grids.shape[-1]) - self.mean
        whitened = torch.matmul(self.factor, centred.permute(1, 2, 0))  # (positions, d, n)
        return whitened.square().sum(dim=1).sqrt().T.reshape(-1, h, w)


class PatchCoreScores(nn.Module):
    """Mean distance to the ``k`` nearest coreset entries, by exact search."""

    def __init__(self, detector):
        super().__init__()
        bank = torch.from_numpy(np.ascontiguousarray(detector.coreset_, dtype=np.float32))
        self.register_buffer("bank", bank)
        self.register_buffer("bank_sq", bank.square().sum(dim=1))
        self.k = int(min(detector.n_neighbors, bank.shape[0]))

    def forward(self, grids):
        h, w, d = grids.shape[1], grids.shape[2], grids.shape[3]
        queries = grids.reshape(-1, d)
        # The expanded form ranks the candidates; the winners are then measured directly,
        # as the Python search does, because the expanded form loses precision near zero.
        ranking = self.bank_sq - 2.0 * torch.matmul(queries, self.bank.T)
        _, nearest = torch.topk(ranking, self.k, dim=1, largest=False)
        distances = (self.bank[nearest] - queries[:, None, :]).square().sum(dim=2).sqrt()
        return distances.mean(dim=1).reshape(-1, h, w)


class DFKDEScores(nn.Module):
    """-log kernel density of each patch under its position's kernels (log-sum-exp)."""

    def __init__(self, detector):
        super().__init__()
        positions, n_train, d = detector.features_.shape
        self.grid = tuple(detector.grid_shape_)
        self.register_buffer("mean", torch.from_numpy(detector.mean_.copy()))
        self.register_buffer("scale", torch.from_numpy(detector.scale_.copy()))
        features = torch.from_numpy(detector.features_.astype(np.float64))
        self.register_buffer("features_t", features.transpose(1, 2).contiguous())
        self.register_buffer("train_sq", features.square().sum(dim=2)[:, None, :])
        two_var = 2.0 * detector.bandwidth_**2
        self.inv_two_var = 1.0 / two_var
        log_norm = (
            0.5 * d * np.log(np.pi * two_var)
            + np.log(detector.scale_.astype(np.float64)).sum(axis=1)
            + np.log(n_train)
        )
        self.register_buffer("log_norm", torch.from_numpy(log_norm)[:, None])

    def forward(self, grids):
        h, w = self.grid
        queries = (grids.reshape(-1, h * w, grids.shape[-1]) - self.mean) / self.scale
        queries = queries.permute(1, 0, 2).double()  # (positions, n, d)
        sq = self.train_sq - 2.0 * torch.matmul(queries, self.features_t)
        sq = (sq + queries.square().sum(dim=2, keepdim=True)).clamp(min=0.0)
        exponents = sq * -self.inv_two_var
        # Log-sum-exp written out, so that no runtime's reduction can skip the max shift.
        top = exponents.max(dim=2, keepdim=True).values
        log_sum = (top + (exponents - top).exp().sum(dim=2, keepdim=True).log())[..., 0]
        return (self.log_norm - log_sum).T.reshape(-1, h, w)


DETECTORS = {
    PaDiMDetector: PaDiMScores,
    PatchCoreDetector: PatchCoreScores,
    DFKDEDetector: DFKDEScores,
}
MIDDLE_STEPS = {LocalAggregation: Aggregation, RandomProjection: Projection}
