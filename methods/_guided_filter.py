"""He, Sun & Tang's guided image filter (ECCV 2010 / TPAMI 2013), colour-guide version, vectorised in torch.

Why it is here: the photorealistic WCT family (PhotoWCT, PhotoWCT2, the PCA-distilled students of Chiu & Gurari)
smooths the network output with a guided filter whose guide is the content photo, so that edges of the content are
kept and the colour noise of the decoder is removed. All three call OpenCV's ``cv2.ximgproc.guidedFilter`` on 8-bit
images, whose ``eps`` is in units of the guide's 0-255 values: on [0, 1] images it is ``eps / 255**2`` (PhotoWCT's
``eps=0.001`` becomes 1.54e-8; PhotoWCT2's and PCA-KD's ``(0.02*255)**2`` becomes ``0.02**2``).

Formulation (TPAMI 2013, Eqs. 19-21, colour guide I with 3 channels, input p filtered channel by channel), per
window w_k of radius r:  a_k = (Sigma_k + eps U)^-1 (mean_k(I p) - mu_k mean_k(p)),  b_k = mean_k(p) - a_k . mu_k,
output q_i = mean_{k: i in w_k}(a_k) . I_i + mean_{k: i in w_k}(b_k). Window means use the O(1) cumulative-sum box
filter of the paper, so the cost does not depend on r. Two border rules:

- ``reflect`` (default): OpenCV's, every window mean taken over the image extended by mirroring with the edge pixel
  repeated (``BORDER_REFLECT``, numpy's ``symmetric``), the rule of the code the photorealistic papers ran;
- ``clip``: the authors' MATLAB ``boxfilter(...) ./ N``, a border window averages only its pixels inside the image.

Where evalkit differs from OpenCV: the arithmetic is float64 on CPU (OpenCV: float32), and the input is the float
network output, not its 8-bit quantisation.
"""

from __future__ import annotations

from typing import Literal

import torch

Border = Literal["reflect", "clip"]
BORDERS: tuple[str, ...] = ("reflect", "clip")


def box_mean(x: torch.Tensor, r: int, border: Border = "reflect") -> torch.Tensor:
    """Mean over the (2r+1)^2 window around every pixel of ``x`` (..., H, W) under the ``border`` rule."""
    if border == "clip":
        h, w = x.shape[-2:]
        return _box_sum(x, r, _clipped) / _box_sum(torch.ones((h, w), dtype=x.dtype, device=x.device), r, _clipped)
    if border == "reflect":
        return _box_sum(x, r, _mirrored) / float((2 * r + 1) ** 2)
    raise ValueError(f"guided filter border must be one of {', '.join(BORDERS)}, got {border!r}")


def _box_sum(x: torch.Tensor, r: int, window) -> torch.Tensor:
    """Window sums by cumulative sums along H then W (the paper's O(N) box filter)."""
    return window(window(x, r, -2), r, -1)


def _cumulative(x: torch.Tensor, dim: int) -> torch.Tensor:
    shape = list(x.shape)
    shape[dim] = 1
    return torch.cat([torch.zeros(shape, dtype=x.dtype, device=x.device), x.cumsum(dim)], dim=dim)


def _clipped(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    c = _cumulative(x, dim)
    idx = torch.arange(n, device=x.device)
    return c.index_select(dim, (idx + r + 1).clamp(max=n)) - c.index_select(dim, (idx - r).clamp(min=0))


def symmetric_index(n: int, r: int, device: torch.device | None = None) -> torch.Tensor:
    """Source index of every position of a length-``n`` axis extended by ``r`` on both sides, mirrored with the edge
    repeated (OpenCV ``BORDER_REFLECT``: ``cba|abcd|dcb``), repeating the reflection when ``r > n``."""
    pos = torch.arange(-r, n + r, device=device) % (2 * n)
    return torch.where(pos < n, pos, 2 * n - 1 - pos)


def _mirrored(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    c = _cumulative(x.index_select(dim, symmetric_index(n, r, x.device)), dim)
    idx = torch.arange(n, device=x.device)
    return c.index_select(dim, idx + 2 * r + 1) - c.index_select(dim, idx)


def guided_filter(
    src: torch.Tensor,
    guide: torch.Tensor,
    radius: int = 30,
    eps: float = 0.02**2,
    dtype: torch.dtype | None = None,
    border: Border = "reflect",
) -> torch.Tensor:
    """Filter ``src`` (1, C, H, W) with the colour ``guide`` (1, 3, H, W); both in [0, 1]; returns ``src``'s dtype.

    ``dtype`` of the internal computation defaults to float64 on CPU (the 3x3 solves of near-flat windows are
    ill-conditioned in float32 when eps is small) and float32 on accelerators.
    """
    if src.dim() != 4 or guide.dim() != 4 or src.shape[-2:] != guide.shape[-2:] or guide.shape[1] != 3:
        raise ValueError(
            f"guided_filter needs src (1,C,H,W) and guide (1,3,H,W) of the same size, got "
            f"{tuple(src.shape)} and {tuple(guide.shape)}"
        )
    if dtype is None:
        dtype = torch.float64 if src.device.type == "cpu" else torch.float32
    out_dtype = src.dtype
    p = src[0].to(dtype)  # (C, H, W)
    g = guide[0].to(dtype)  # (3, H, W)
    r = int(radius)

    def mean(x: torch.Tensor) -> torch.Tensor:
        return box_mean(x, r, border)

    mean_i = mean(g)  # (3, H, W)
    mean_p = mean(p)  # (C, H, W)
    cov_ip = mean(g[:, None] * p[None]) - mean_i[:, None] * mean_p[None]  # (3, C, H, W)
    sigma = mean(g[:, None] * g[None]) - mean_i[:, None] * mean_i[None]  # (3, 3, H, W)
    sigma = sigma + eps * torch.eye(3, dtype=dtype, device=g.device)[:, :, None, None]
    # a = Sigma^-1 cov_Ip for every pixel and output channel: a batched 3x3 solve, (H, W, 3, 3) \ (H, W, 3, C)
    a = torch.linalg.solve(sigma.permute(2, 3, 0, 1), cov_ip.permute(2, 3, 0, 1))  # (H, W, 3, C)
    a = a.permute(2, 3, 0, 1)  # (3, C, H, W)
    b = mean_p - (a * mean_i[:, None]).sum(0)  # (C, H, W)
    q = (mean(a) * g[:, None]).sum(0) + mean(b)
    return q[None].to(out_dtype)
