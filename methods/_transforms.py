"""Feature transforms shared by the feed-forward methods: AdaIN, WCT (global and segment-wise), colour matching.

Each function is written from its paper's definition and works on any device (CPU and CUDA share this code):

- AdaIN (Huang & Belongie 2017, Eq. 8): ``sigma(s) * (c - mu(c)) / sigma(c) + mu(s)`` per channel, with mu/sigma
  over spatial positions. sigma uses the unbiased variance plus ``eps`` = 1e-5, as the reference implementation
  (naoto0804/pytorch-AdaIN ``calc_mean_std``) does, so outputs match the released decoder's training.
- WCT (Li et al. 2017, Eqs. 2-4): whitening ``E_c D_c^-1/2 E_c^T (f_c - m_c)`` and colouring
  ``E_s D_s^1/2 E_s^T f_w + m_s`` on eigendecompositions of the channel covariances (unbiased, divided by N-1 as the
  official code does). Covariances and eigendecompositions run in float64, because deep-layer covariances are
  ill-conditioned and D^-1/2 amplifies any error in the small eigenvalues; the resulting C x C transform is
  applied to the features in their own dtype. Eigenvalues below
  ``eig_floor`` (1e-5, the official threshold) are dropped, i.e. whitening/colouring act on the subspace the
  features actually span instead of amplifying numerical noise by 1/sqrt(1e-12).
- Segment-wise WCT: the same transform per label of a segmentation map (content pixels of label k are coloured with
  the statistics of style pixels of label k); labels absent (or too small) in the style fall back to the global
  transform. One ``eigh`` per label, vectorised over pixels: no per-pixel Python loops.
- Colour matching (used by AdaIN's colour preservation): the style image is recoloured to the content image's RGB
  mean and covariance before stylisation (Gatys et al. 2017, "colour histogram matching", linear variant) - the
  method the AdaIN paper's Sec. 7.4 refers to and the reference implementation's ``coral`` performs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EIG_FLOOR = 1e-5  # the official WCT code keeps eigenvalues > 1e-5 (UniversalStyleTransfer / PytorchWCT)
ADAIN_EPS = 1e-5  # added to the variance, as in the AdaIN reference implementation
MIN_SEGMENT_PIXELS = 10  # a covariance from fewer feature positions than this is not worth trusting


# -- AdaIN --------------------------------------------------------------------------------------------------------
def channel_mean_std(feat: torch.Tensor, eps: float = ADAIN_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std of ``(N, C, H, W)`` features, shaped ``(N, C, 1, 1)``."""
    if feat.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) features, got shape {tuple(feat.shape)}")
    n, c = feat.shape[:2]
    flat = feat.reshape(n, c, -1)
    var = flat.var(dim=2, unbiased=True) + eps if flat.shape[2] > 1 else torch.full_like(flat[..., 0], eps)
    return flat.mean(dim=2).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = ADAIN_EPS) -> torch.Tensor:
    """Adaptive instance normalisation: content features renormalised to the style's channel mean/std."""
    if content.shape[:2] != style.shape[:2]:
        raise ValueError(f"AdaIN needs matching (N, C): content {tuple(content.shape)}, style {tuple(style.shape)}")
    c_mean, c_std = channel_mean_std(content, eps)
    s_mean, s_std = channel_mean_std(style, eps)
    return (content - c_mean) / c_std * s_std + s_mean


def adain_interpolate(
    content: torch.Tensor, styles: Sequence[torch.Tensor], weights: Sequence[float], eps: float = ADAIN_EPS
) -> torch.Tensor:
    """Style interpolation (AdaIN paper Sec. 7.4): a convex combination of AdaIN outputs for several styles.

    ``weights`` are normalised to sum to one, so ``[1, 1]`` means an even mix.
    """
    if len(styles) != len(weights) or not styles:
        raise ValueError(f"need one weight per style: {len(styles)} styles, {len(weights)} weights")
    w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
    if (w < 0).any() or float(w.sum()) <= 0:
        raise ValueError(f"interpolation weights must be non-negative with a positive sum, got {list(weights)}")
    w = w / w.sum()
    out = torch.zeros_like(content)
    for style, weight in zip(styles, w.tolist(), strict=True):
        out = out + weight * adain(content, style, eps)
    return out


def blend(stylised: torch.Tensor, content: torch.Tensor, alpha: float) -> torch.Tensor:
    """Content-style trade-off in feature space: ``alpha * stylised + (1 - alpha) * content`` (both papers)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    return alpha * stylised + (1.0 - alpha) * content


# -- whitening and colouring: one core, the official variants as parameters ----------------------------------------
_CHUNK_ELEMENTS = 1 << 24  # float64 working set per chunk: 128 MiB, whatever the image size


@dataclass(frozen=True)
class Whitening:
    """How an official code whitens and colours; its variants differ only in these fields.

    - ``content_reg`` / ``style_reg``: added to the covariance diagonal before the eigendecomposition (WCT² and the
      PCA-distilled students add ``I`` to both; the identity keeps small-variance directions from being amplified);
    - ``unbiased``: covariance divided by N-1 (WCT, WCT²) or N (PCA-KD);
    - ``eig_floor``: eigenvalues below it are dropped, i.e. whitening and colouring act on the subspace the features
      span (WCT: 1e-5; Collaborative Distillation's code: 1e-100, which keeps numerical-noise directions);
    - ``clamp``: clamp the result to the content features' [min, max] (WCT²).
    """

    content_reg: float = 0.0
    style_reg: float = 0.0
    unbiased: bool = True
    eig_floor: float = EIG_FLOOR
    clamp: bool = False


WCT_RULE = Whitening()  # Li et al. 2017 (UniversalStyleTransfer / PytorchWCT)
WCT2_RULE = Whitening(content_reg=1.0, style_reg=1.0, unbiased=True, clamp=True)  # clovaai/WCT2 utils/core.py
PCA_KD_RULE = Whitening(content_reg=1.0, style_reg=1.0, unbiased=False)  # chiutaiyin/PCA-Knowledge-Distillation


def _chunks(flat: torch.Tensor):
    step = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[0]))
    for start in range(0, flat.shape[1], step):
        yield flat[:, start : start + step]


def covariance(flat: torch.Tensor, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(C, 1)`` and covariance ``(C, C)`` of ``(C, N)`` features (divided by N-1, or N), in float64.

    Accumulated over column chunks, so a 4K image's relu1_1 features (24-64 x 8.3M) never exist as a float64 copy
    (that alone would be 1.6-4 GB); the two-pass (mean first, then centred products) form avoids the cancellation
    of ``E[xx^T] - mm^T``.
    """
    c, n = flat.shape
    total = torch.zeros(c, dtype=torch.float64, device=flat.device)
    for chunk in _chunks(flat):
        total += chunk.double().sum(dim=1)
    mean = (total / max(n, 1)).unsqueeze(1)
    cov = torch.zeros(c, c, dtype=torch.float64, device=flat.device)
    for chunk in _chunks(flat):
        centred = chunk.double() - mean
        cov += centred @ centred.T
    return mean, cov / max(n - 1 if unbiased else n, 1)


def eigh(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.linalg.eigh``, single-threaded on CPU.

    Why: for the C <= 512 matrices of WCT, multi-threaded LAPACK gains nothing, and on a busy machine its OpenMP
    barriers made each call up to 100x slower (measured: 10 eighs of 128x128 took 18 s on 2 contended threads,
    0.07 s on one).
    """
    if cov.device.type != "cpu":
        return torch.linalg.eigh(cov)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(cov)
    finally:
        torch.set_num_threads(threads)


def _sym_power(cov: torch.Tensor, power: float, eig_floor: float, reg: float = 0.0) -> torch.Tensor:
    """``E diag(d^power) E^T`` of ``cov + reg I`` over eigenvalues d >= eig_floor (others dropped), float64."""
    if reg:
        cov = cov + reg * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    evals, evecs = eigh(cov)
    keep = evals >= eig_floor
    scaled = torch.where(keep, evals.clamp_min(max(eig_floor, 1e-300)).pow(power), torch.zeros_like(evals))
    return (evecs * scaled) @ evecs.T


def whitening_matrix(cov: torch.Tensor, eig_floor: float = EIG_FLOOR, reg: float = 0.0) -> torch.Tensor:
    return _sym_power(cov, -0.5, eig_floor, reg)


def colouring_matrix(cov: torch.Tensor, eig_floor: float = EIG_FLOOR, reg: float = 0.0) -> torch.Tensor:
    return _sym_power(cov, 0.5, eig_floor, reg)


def whiten(flat: torch.Tensor, eig_floor: float = EIG_FLOOR) -> torch.Tensor:
    """Whitened ``(C, N)`` features (float64): zero mean, identity covariance on the spanned subspace."""
    mean, cov = covariance(flat)
    return whitening_matrix(cov, eig_floor) @ (flat.double() - mean)


def wct_matrix(
    content: torch.Tensor, style: torch.Tensor, rule: Whitening = WCT_RULE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(T, m_c, m_s)`` with ``T = E_s D_s^1/2 E_s^T E_c D_c^-1/2 E_c^T`` (float64), so the transform is
    ``T (f_c - m_c) + m_s``: one C x C matrix, computed once in float64."""
    if content.shape[0] != style.shape[0]:
        raise ValueError(f"WCT needs the same channel count: content {content.shape[0]}, style {style.shape[0]}")
    c_mean, c_cov = covariance(content, rule.unbiased)
    s_mean, s_cov = covariance(style, rule.unbiased)
    colour = colouring_matrix(s_cov, rule.eig_floor, rule.style_reg)
    return colour @ whitening_matrix(c_cov, rule.eig_floor, rule.content_reg), c_mean, s_mean


def wct_flat(content: torch.Tensor, style: torch.Tensor, rule: Whitening = WCT_RULE) -> torch.Tensor:
    """Whitening-colouring of ``(C, Nc)`` content features onto ``(C, Ns)`` style features, in the content's dtype.

    Statistics and the C x C transform are float64; applying it to the N feature vectors in the features' own
    dtype costs float32 rounding only (~1e-6 relative), and keeps 4K feature maps from being copied to float64.
    """
    matrix, c_mean, s_mean = wct_matrix(content, style, rule)
    dtype = content.dtype
    out = matrix.to(dtype) @ (content - c_mean.to(dtype)) + s_mean.to(dtype)
    if rule.clamp:
        out = out.clamp(float(content.min()), float(content.max()))
    return out


def whiten_colour(
    fc: torch.Tensor,
    fs: torch.Tensor,
    reg: float = 1.0,
    unbiased: bool = False,
    clamp: bool = False,
    eps_rank: float = EIG_FLOOR,
) -> torch.Tensor:
    """The photorealistic family's call: ``(Cs + reg I)^1/2 (Cc + reg I)^-1/2 (fc - mu_c) + mu_s``."""
    return wct_flat(fc, fs, Whitening(reg, reg, unbiased, eps_rank, clamp))


def wct(content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0, eig_floor: float = EIG_FLOOR) -> torch.Tensor:
    """WCT on ``(1, C, H, W)`` feature maps with the alpha blend of Li et al. Eq. 5; returns content's dtype."""
    _check_single(content, style)
    c = content.shape[1]
    flat = content.reshape(c, -1)
    out = wct_flat(flat, style.reshape(c, -1), Whitening(eig_floor=eig_floor))
    return blend(out.reshape(content.shape), content, alpha)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an ``(H, W)`` integer label map to a feature map's spatial size."""
    if tuple(labels.shape) == tuple(size):
        return labels.long()
    resized = F.interpolate(labels[None, None].double(), size=size, mode="nearest")
    return resized[0, 0].round().long()


def wct_masked(
    content: torch.Tensor,
    style: torch.Tensor,
    content_labels: torch.Tensor,
    style_labels: torch.Tensor,
    alpha: float = 1.0,
    eig_floor: float = EIG_FLOOR,
    min_pixels: int = MIN_SEGMENT_PIXELS,
) -> torch.Tensor:
    """Segment-wise WCT: each content label takes the statistics of the same label in the style.

    Label maps may be at image resolution; they are resized (nearest) to the feature maps. Content labels that
    the style lacks (or has fewer than ``min_pixels`` positions of), and content segments too small to estimate a
    covariance from, receive the global transform - the fallback the segment-wise variants of WCT use.
    """
    _check_single(content, style)
    c = content.shape[1]
    c_lab = resize_labels(content_labels.to(content.device), tuple(content.shape[-2:])).reshape(-1)
    s_lab = resize_labels(style_labels.to(style.device), tuple(style.shape[-2:])).reshape(-1)
    c_flat, s_flat = content.reshape(c, -1), style.reshape(c, -1)
    rule = Whitening(eig_floor=eig_floor)
    out = wct_flat(c_flat, s_flat, rule)  # global transform: the fallback for every unmatched pixel
    s_counts = torch.bincount(s_lab)
    for label in torch.unique(c_lab).tolist():
        c_idx = (c_lab == label).nonzero(as_tuple=True)[0]
        if c_idx.numel() < min_pixels or label >= s_counts.numel() or int(s_counts[label]) < min_pixels:
            continue
        s_idx = (s_lab == label).nonzero(as_tuple=True)[0]
        out[:, c_idx] = wct_flat(c_flat[:, c_idx], s_flat[:, s_idx], rule)
    return blend(out.reshape(content.shape), content, alpha)


def _check_single(content: torch.Tensor, style: torch.Tensor) -> None:
    if content.dim() != 4 or style.dim() != 4 or content.shape[0] != 1 or style.shape[0] != 1:
        raise ValueError(f"WCT works on single (1, C, H, W) maps, got {tuple(content.shape)} and {tuple(style.shape)}")


# -- colour ----------------------------------------------------------------------------------------------------------
def match_colour(source: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Recolour ``source`` (1, 3, H, W) so its RGB mean and covariance equal ``target``'s (linear colour transfer).

    ``eps`` regularises the covariances so a flat-coloured image does not divide by zero.
    """
    src = source.reshape(3, -1).double()
    tgt = target.reshape(3, -1).double()
    s_mean, s_cov = covariance(src)
    t_mean, t_cov = covariance(tgt)
    eye = torch.eye(3, dtype=torch.float64, device=source.device) * eps
    transform = colouring_matrix(t_cov + eye, 0.0) @ whitening_matrix(s_cov + eye, 0.0)
    out = transform @ (src - s_mean) + t_mean
    return out.reshape(source.shape).to(source.dtype).clamp(0, 1)
