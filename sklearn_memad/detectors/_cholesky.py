"""Batched inverse Cholesky factors, blocked so that LAPACK only sees small matrices."""

import torch

__all__ = ["inverse_cholesky"]

# LAPACK's batched potrf/trsm cost grows faster than d^3 on small matrices here; below this
# size they win, above it halving and batched products win.
_LEAF = 32


def inverse_cholesky(cov, corner_dtype=None):
    """Lower-triangular ``W`` with ``W C W^T = I`` for each matrix of a batch.

    ``W`` is ``L^-1`` for the Cholesky factor ``C = L L^T``. The matrix is split in halves
    recursively: with ``W11`` for the top-left block, the bottom-right block's factor is that
    of the Schur complement ``C22 - L21 L21^T`` (``L21 = C21 W11^T``), and the off-diagonal
    block of the inverse is ``-W22 L21 W11``.

    Parameters
    ----------
    cov : torch.Tensor of shape (batch, d, d)
        Symmetric positive definite matrices (float64 where their condition number needs it).
    corner_dtype : torch.dtype, default=None
        dtype of the outermost product ``-W22 L21 W11`` (the lower-left quarter of ``W``),
        cov's by default. Every other block feeds a later step and stays in cov's dtype; this
        one is only returned, so a caller that keeps ``W`` in float32 may ask for float32,
        which is faster than float64.

    Returns
    -------
    torch.Tensor of shape (batch, d, d)
        ``W``, same dtype, zeros above the diagonal.

    Raises
    ------
    torch.linalg.LinAlgError
        If a matrix is not positive definite.
    """
    out = torch.zeros_like(cov)
    _inverse_cholesky_into(cov, out, corner_dtype)
    return out


def _inverse_cholesky_into(cov, out, corner_dtype=None):
    d = cov.shape[-1]
    if d <= _LEAF:
        lower = torch.linalg.cholesky(cov)
        identity = torch.eye(d, dtype=cov.dtype, device=cov.device).expand_as(lower)
        out.copy_(torch.linalg.solve_triangular(lower, identity, upper=False))
        return
    k = d // 2
    top, bottom = out[:, :k, :k], out[:, k:, k:]
    _inverse_cholesky_into(cov[:, :k, :k], top)
    panel = torch.bmm(cov[:, k:, :k], top.mT)
    schur = torch.baddbmm(cov[:, k:, k:], panel, panel.mT, alpha=-1.0)
    _inverse_cholesky_into(schur, bottom)
    # Inner calls leave corner_dtype unset: their corners are read by the level above.
    if corner_dtype is not None and corner_dtype != cov.dtype:
        bottom, panel, top = bottom.to(corner_dtype), panel.to(corner_dtype), top.to(corner_dtype)
    out[:, k:, :k] = torch.bmm(torch.bmm(bottom, panel), top).neg_()
