"""He, Sun & Tang's guided image filter (ECCV 2010 / TPAMI 2013), colour-guide version, vectorised in torch.

Why it is here: the photorealistic WCT family (PhotoWCT, PhotoWCT2, the PCA-distilled students of Chiu &
Gurari)
smooths the network output with a guided filter whose guide is the content photo, so that edges of the
content are
kept and the colour noise of the decoder is removed. The authors call OpenCV's ``cv2.ximgproc.guidedFilter``
with
``radius=30, eps=(0.02*255)**2`` on 8-bit images; on [0, 1] images that is ``eps = 0.02**2``.

Formulation (TPAMI 2013, Eqs. 19-21, colour guide I with 3 channels, input p filtered channel by channel), per
window w_k of radius r:  a_k = (Sigma_k + eps U)^-1 (mean_k(I p) - mu_k mean_k(p)),  b_k = mean_k(p) - a_k .
mu_k,
output q_i = mean_{k: i in w_k}(a_k) . I_i + mean_{k: i in w_k}(b_k). Window means use the O(1)
cumulative-sum box
filter of the paper, clipped at the border (a border window averages only its pixels inside the image,
exactly as
the authors' MATLAB ``boxfilter(...) ./ N``), so the cost does not depend on r.
"""

from __future__ import annotations

import torch


def box_mean(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window around every pixel of ``x`` (..., H, W), windows clipped to the image."""
    h, w = x.shape[-2:]
    return _box_sum(x, r) / _box_sum(torch.ones((h, w), dtype=x.dtype, device=x.device), r)


def _box_sum(x: torch.Tensor, r: int) -> torch.Tensor:
    """Window sums by cumulative sums along H then W (the paper's O(N) box filter)."""
    return _cum_window(_cum_window(x, r, -2), r, -1)


def _cum_window(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    n = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = 1
    c = torch.cat([torch.zeros(shape, dtype=x.dtype, device=x.device), x.cumsum(dim)], dim=dim)
    idx = torch.arange(n, device=x.device)
    hi = (idx + r + 1).clamp(max=n)
    lo = (idx - r).clamp(min=0)
    return c.index_select(dim, hi) - c.index_select(dim, lo)


def guided_filter(
    src: torch.Tensor,
    guide: torch.Tensor,
    radius: int = 30,
    eps: float = 0.02**2,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Filter ``src`` (1, C, H, W) with the colour ``guide`` (1, 3, H, W); both in [0, 1]; returns ``src``'s
    dtype.

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
    mean_i = box_mean(g, r)  # (3, H, W)
    mean_p = box_mean(p, r)  # (C, H, W)
    mean_ip = box_mean(g[:, None] * p[None], r)  # (3, C, H, W)
    cov_ip = mean_ip - mean_i[:, None] * mean_p[None]  # (3, C, H, W)
    outer = g[:, None] * g[None]  # (3, 3, H, W)
    sigma = box_mean(outer, r) - mean_i[:, None] * mean_i[None]  # (3, 3, H, W)
    sigma = sigma + eps * torch.eye(3, dtype=dtype, device=g.device)[:, :, None, None]
    # a = Sigma^-1 cov_Ip for every pixel and output channel: a batched 3x3 solve, (H, W, 3, 3) \ (H, W, 3, C)
    a = torch.linalg.solve(sigma.permute(2, 3, 0, 1), cov_ip.permute(2, 3, 0, 1))  # (H, W, 3, C)
    a = a.permute(2, 3, 0, 1)  # (3, C, H, W)
    b = mean_p - (a * mean_i[:, None]).sum(0)  # (C, H, W)
    q = (box_mean(a, r) * g[:, None]).sum(0) + box_mean(b, r)
    return q[None].to(out_dtype)
