"""PhotoWCT's exact smoothing step: propagation with the matting affinity of the content photo (Li et al., ECCV 2018,
Eq. 5, closed form; NVIDIA/FastPhotoStyle ``photo_smooth.py`` ``Propagator``).

The smoothed image is ``R* = (1 - beta) (I - beta S)^-1 Y`` with ``Y`` the stylised image, ``S = D^-1/2 W D^-1/2`` and
``W`` the matting affinity of Levin et al. (CVPR 2006) over every 3x3 window of the content: for window ``k`` with
mean ``mu_k`` and covariance ``Sigma_k`` of its 9 pixels, pixels ``i, j`` of it add
``(1 + (I_i - mu_k)^T (Sigma_k + eps/9 U)^-1 (I_j - mu_k)) / 9`` to ``W_ij``. The official parameters:
``beta = 0.9999``, ``eps = 1e-7``, windows of radius 1, one sparse LU factorisation (SciPy's SuperLU, ``factorized``)
solved for the three channels.

Done as the official code does it, including its geometry: the stylised image loses a 2-pixel frame that is rebuilt by
edge replication, the content is resized to the inner ``(h-4) x (w-4)`` and replicated out the same way, and the
result is the inner part (evalkit resizes it back to the content's size, where the official output stays 4 pixels
smaller). Differences: the affinity is assembled on its 25 diagonals (same values, no 81-entries-per-window
coordinate list), and the content is resized bilinearly in float (the official ``scipy.misc.imresize`` rounds to
8 bits).

Cost: the factorisation's fill-in grows faster than the pixel count; :func:`memory_estimate` (calibrated on this
implementation) is checked against the memory available before it starts, and a job that would not fit ends as
``oom`` instead of being killed by the kernel.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

BETA = 0.9999
EPS = 1e-7
BORDER = 2  # pixels the official code crops and replicates
_OFFSETS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # a 3x3 window around its centre, row-major


def matting_affinity(content: np.ndarray, eps: float = EPS):
    """The affinity ``W`` (scipy CSC, ``N x N``, N = H*W, row-major pixels) of an ``(H, W, 3)`` float64 image over
    every full 3x3 window (windows centred at the image's inner pixels), duplicates summed."""
    import scipy.sparse as sp

    h, w, _ = content.shape
    ch, cw = h - 2, w - 2
    shifted = [content[1 + dy : 1 + dy + ch, 1 + dx : 1 + dx + cw] for dy, dx in _OFFSETS]  # 9 x (ch, cw, 3)
    mu = sum(shifted) / 9.0
    centred = [s - mu for s in shifted]
    cov = sum(np.einsum("...i,...j->...ij", c, c) for c in centred) / 9.0
    inv = np.linalg.inv(cov + (eps / 9.0) * np.eye(3))
    projected = [np.einsum("...i,...ij->...j", c, inv) for c in centred]
    diagonals: dict[int, np.ndarray] = {}
    for a, (ay, ax) in enumerate(_OFFSETS):
        for b, (by, bx) in enumerate(_OFFSETS):
            value = (1.0 + np.einsum("...i,...i->...", projected[a], centred[b])) / 9.0
            offset = (by - ay) * w + (bx - ax)  # column minus row of the affected entry
            grid = diagonals.setdefault(offset, np.zeros((h, w)))
            grid[1 + ay : 1 + ay + ch, 1 + ax : 1 + ax + cw] += value  # indexed by the entry's row pixel
    offsets = sorted(diagonals)
    n = h * w
    # scipy's dia_matrix stores diagonal k's entry (r, r + k) at data[k_index, r + k]: shift each row-indexed grid
    data = np.zeros((len(offsets), n))
    for row, k in enumerate(offsets):
        flat = diagonals[k].reshape(-1)
        if k >= 0:
            data[row, k:] = flat[: n - k]
        else:
            data[row, : n + k] = flat[-k:]
    return sp.dia_matrix((data, offsets), shape=(n, n)).tocsc()


def memory_estimate(pixels: int) -> int:
    """Bytes the propagation needs for an image of ``pixels`` pixels (affinity, factorisation fill-in, solves).

    Calibrated on this implementation with SciPy's SuperLU (peak RSS over the interpreter's, fresh process per size):
    0.49 / 1.02 / 2.15 / 4.66 GB at 65K / 131K / 262K / 524K pixels, i.e. about 2,400 N^1.1 bytes; the estimate
    adds 20 %. So 1024x512 needs ~5.3 GiB, 1280x720 ~9.8 GiB, 1920x1080 ~24 GiB, 3840x2160 ~110 GiB."""
    return int(2_900 * pixels**1.1)


def available_memory() -> int | None:
    """``MemAvailable`` from /proc/meminfo (Linux), or ``None`` where it cannot be read."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def propagate(stylised: np.ndarray, content: np.ndarray, beta: float = BETA, eps: float = EPS) -> np.ndarray:
    """``(1 - beta) (I - beta S)^-1 Y`` per channel, on ``(H, W, 3)`` float64 images in [0, 1] of the same size."""
    from scipy.sparse import diags, identity
    from scipy.sparse.linalg import factorized

    h, w, k = stylised.shape
    affinity = matting_affinity(content, eps)
    d = np.asarray(affinity.sum(axis=0)).ravel() ** -0.5
    scale = diags(d)
    system = (identity(h * w, format="csc") - beta * (scale @ affinity @ scale)).tocsc()
    solve = factorized(system)
    flat = stylised.reshape(h * w, k)
    out = np.stack([solve(np.ascontiguousarray(flat[:, c])) for c in range(k)], axis=1)
    return (out * (1.0 - beta)).reshape(h, w, k)


def smooth_exact(output: torch.Tensor, content: torch.Tensor, beta: float = BETA, eps: float = EPS) -> torch.Tensor:
    """The official ``Propagator.process`` on (1, 3, H, W) tensors in [0, 1]; returns the content's size.

    Raises :class:`MemoryError` (an ``oom`` result) before starting when :func:`memory_estimate` exceeds the memory
    available (``EVALKIT_MATTING_MAX_BYTES`` overrides the limit)."""
    _, _, h1, w1 = output.shape
    h, w = h1 - 2 * BORDER, w1 - 2 * BORDER
    if h < 3 or w < 3:
        raise ValueError(f"exact smoothing needs an image of at least 7x7 pixels, got {w1}x{h1}")
    need = memory_estimate(h1 * w1)
    limit = int(os.environ.get("EVALKIT_MATTING_MAX_BYTES", 0)) or available_memory()
    if limit is not None and need > limit:
        raise MemoryError(
            f"out of memory: exact smoothing (matting-Laplacian solve) of {w1}x{h1} needs about "
            f"{need / 2**30:.1f} GiB, {limit / 2**30:.1f} GiB are available; use post=gif at this size"
        )
    inner = output[..., BORDER : BORDER + h, BORDER : BORDER + w]
    small = F.interpolate(content, size=(h, w), mode="bilinear", align_corners=False)
    pad = (BORDER, BORDER, BORDER, BORDER)
    y = F.pad(inner, pad, mode="replicate")[0].permute(1, 2, 0).double().cpu().numpy()
    guide = F.pad(small, pad, mode="replicate")[0].permute(1, 2, 0).double().cpu().numpy()
    solved = propagate(y, guide, beta, eps)[BORDER : BORDER + h, BORDER : BORDER + w]
    result = torch.from_numpy(np.clip(solved, 0.0, 1.0)).permute(2, 0, 1)[None].to(output.dtype)
    result = F.interpolate(result, size=(h1, w1), mode="bilinear", align_corners=False)
    return result.to(output.device).clamp(0, 1)
