"""Feature transforms shared by the feed-forward methods: AdaIN, WCT (global and segment-wise), colour transfer.

Each function is written from its paper's definition and works on any device (CPU and CUDA share this code):

- AdaIN (Huang & Belongie 2017, Eq. 8): ``sigma(s) * (c - mu(c)) / sigma(c) + mu(s)`` per channel, with mu/sigma
  over spatial positions. sigma uses the unbiased variance plus ``eps`` = 1e-5, as the reference implementation
  (naoto0804/pytorch-AdaIN ``calc_mean_std``) does, so outputs match the released decoder's training.
- WCT (Li et al. 2017, Eqs. 2-4): whitening ``E_c D_c^-1/2 E_c^T (f_c - m_c)`` and colouring
  ``E_s D_s^1/2 E_s^T f_w + m_s`` on eigendecompositions of the channel covariances. One core serves every official
  variant (:class:`Whitening`: plain WCT, WCT², PCA-KD differ only in its fields).
- Segment-wise WCT: the same transform per label of a segmentation map; labels absent (or too small) in the style
  fall back to the global transform. One ``eigh`` per label, vectorised over pixels.
- Colour transfer for AdaIN's colour preservation: :func:`coral`, exactly the reference code's ``coral``, and
  :func:`match_colour`, mean + covariance matching (Gatys et al. 2017's linear colour transfer).

Why the details:

- *Valid region.* Adapters pad the content so decoders return its exact size; the padded rows and columns are not
  image. Every statistic (mean, std, covariance) is therefore taken over ``valid``, the feature map's extent that
  covers the image, while the transform is applied to the whole map. Unpadded maps (sizes that are multiples of the
  network's stride) give exactly what they gave without this.
- *Precision.* Covariances are accumulated and decomposed in float64 (deep-layer covariances are ill-conditioned and
  D^-1/2 amplifies any error in the small eigenvalues); the resulting C x C transform is applied in float32. Every
  transform runs with autocast disabled and half-precision inputs upcast, so ``--precision bf16`` changes the
  networks, never the linear algebra.
- *Memory layout.* Features may be NCHW or channels_last (the fast path for convolutions); statistics are read in
  row chunks and transforms write their result in the input's layout, so a 4K feature map is never copied whole to
  float64 nor transposed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

EIG_FLOOR = 1e-5  # the official WCT code drops eigenvalues below 1e-5 (UniversalStyleTransfer / PytorchWCT)
CD16X_EIG_FLOOR = 1e-100  # Collaborative Distillation's PytorchWCT/util_wct.py (EigenValueThre)
ADAIN_EPS = 1e-5  # added to the variance, as in the AdaIN reference implementation
MIN_SEGMENT_PIXELS = 10  # a covariance from fewer feature positions than this is not worth trusting
_CHUNK_ELEMENTS = 1 << 24  # float64 working set per chunk: 128 MiB, whatever the image size

Valid = tuple[int, int] | None  # (rows, columns) of a feature map that cover the image; None: all of it
F_ = TypeVar("F_", bound=Callable[..., Any])


# -- plumbing -----------------------------------------------------------------------------------------------------
def exact(fn: F_) -> F_:
    """Run a transform in full precision: autocast off, half-precision tensor arguments upcast to float32."""

    def upcast(value: Any) -> Any:
        return (
            value.float() if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.half) else value
        )

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with ExitStack() as stack:
            stack.enter_context(torch.autocast("cpu", enabled=False))
            if torch.cuda.is_available():
                stack.enter_context(torch.autocast("cuda", enabled=False))
            return fn(*[upcast(a) for a in args], **{k: upcast(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def valid_extent(size: tuple[int, int], stride: int) -> tuple[int, int]:
    """Rows and columns of a stride-``stride`` feature map that cover an image of ``size`` (rounded up)."""
    return -(-size[0] // stride), -(-size[1] // stride)


def _crop(feat: torch.Tensor, valid: Valid) -> torch.Tensor:
    if valid is None or tuple(valid) == tuple(feat.shape[-2:]):
        return feat
    return feat[..., : valid[0], : valid[1]]


def _row_chunks(feat: torch.Tensor) -> Iterator[torch.Tensor]:
    """(C, n) float64 blocks of a (1, C, H, W) map, a few rows at a time (any memory layout)."""
    _, c, h, w = feat.shape
    rows = max(1, _CHUNK_ELEMENTS // max(1, c * w))
    for start in range(0, h, rows):
        block = feat[0, :, start : start + rows, :]
        yield block.to(torch.float64, memory_format=torch.contiguous_format).reshape(c, -1)


def _affine(feat: torch.Tensor, matrix: torch.Tensor, c_mean: torch.Tensor, s_mean: torch.Tensor) -> torch.Tensor:
    """``matrix (f - c_mean) + s_mean`` over every position of a (1, C, H, W) map, float32, in the map's layout."""
    dtype = feat.dtype
    m, cm, sm = matrix.to(dtype), c_mean.to(dtype).reshape(-1), s_mean.to(dtype).reshape(-1)
    if feat.is_contiguous(memory_format=torch.channels_last) and not feat.is_contiguous():
        rows = feat.permute(0, 2, 3, 1)  # (1, H, W, C), a view
        return torch.addmm(sm, (rows - cm).reshape(-1, feat.shape[1]), m.T).reshape(rows.shape).permute(0, 3, 1, 2)
    flat = feat.reshape(feat.shape[1], -1)
    return torch.addmm(sm[:, None], m, flat - cm[:, None]).reshape(feat.shape)


# -- AdaIN --------------------------------------------------------------------------------------------------------
@exact
def channel_mean_std(
    feat: torch.Tensor, eps: float = ADAIN_EPS, valid: Valid = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel mean and std of ``(N, C, H, W)`` features over ``valid``, shaped ``(N, C, 1, 1)``."""
    if feat.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) features, got shape {tuple(feat.shape)}")
    region = _crop(feat, valid)
    n, c = region.shape[:2]
    if region.shape[2] * region.shape[3] > 1:
        var = region.var(dim=(2, 3), unbiased=True) + eps
    else:
        var = torch.full((n, c), eps, dtype=region.dtype, device=region.device)
    return region.mean(dim=(2, 3)).view(n, c, 1, 1), var.sqrt().view(n, c, 1, 1)


@exact
def adain(content: torch.Tensor, style: torch.Tensor, eps: float = ADAIN_EPS, valid: Valid = None) -> torch.Tensor:
    """Adaptive instance normalisation: content features renormalised to the style's channel mean/std (content
    statistics over ``valid``)."""
    if content.shape[:2] != style.shape[:2]:
        raise ValueError(f"AdaIN needs matching (N, C): content {tuple(content.shape)}, style {tuple(style.shape)}")
    c_mean, c_std = channel_mean_std(content, eps, valid)
    s_mean, s_std = channel_mean_std(style, eps)
    return (content - c_mean) * (s_std / c_std) + s_mean


@exact
def adain_interpolate(
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    weights: Sequence[float],
    eps: float = ADAIN_EPS,
    valid: Valid = None,
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
    if len(styles) == 1:
        return adain(content, styles[0], eps, valid)
    out = torch.zeros_like(content)
    for style, weight in zip(styles, w.tolist(), strict=True):
        out = out + weight * adain(content, style, eps, valid)
    return out


def blend(stylised: torch.Tensor, content: torch.Tensor, alpha: float) -> torch.Tensor:
    """Content-style trade-off in feature space: ``alpha * stylised + (1 - alpha) * content`` (both papers)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if alpha == 1.0:
        return stylised
    return alpha * stylised + (1.0 - alpha) * content.to(stylised.dtype)


# -- whitening and colouring: one core, the official variants as parameters ----------------------------------------
@dataclass(frozen=True)
class Whitening:
    """How an official code whitens and colours; its variants differ only in these fields.

    - ``content_reg`` / ``style_reg``: added to the covariance diagonal before the eigendecomposition (WCT² and the
      PCA-distilled students add ``I`` to both; the identity keeps small-variance directions from being amplified);
    - ``unbiased``: covariance divided by N-1 (WCT, WCT²) or N (PCA-KD);
    - ``eig_floor``: eigenvalues below it are dropped, i.e. whitening and colouring act on the subspace the features
      span (WCT: 1e-5; Collaborative Distillation's code: 1e-100, which keeps numerical-noise directions);
    - ``clamp``: clamp the result to the content features' [min, max] (WCT²);
    - ``content_scale`` / ``content_diag``: the content covariance becomes ``scale C + diag * diag(C)`` before the
      regulariser (PhotoNAS's ``wct.py``: ``(1 - I) G + 2 I G + 0.5 G``, i.e. scale 1.5, diag 1).
    """

    content_reg: float = 0.0
    style_reg: float = 0.0
    unbiased: bool = True
    eig_floor: float = EIG_FLOOR
    clamp: bool = False
    content_scale: float = 1.0
    content_diag: float = 0.0


WCT_RULE = Whitening()  # Li et al. 2017 (UniversalStyleTransfer / PytorchWCT)
WCT2_RULE = Whitening(content_reg=1.0, style_reg=1.0, unbiased=True, clamp=True)  # clovaai/WCT2 utils/core.py
PCA_KD_RULE = Whitening(content_reg=1.0, style_reg=1.0, unbiased=False)  # chiutaiyin/PCA-Knowledge-Distillation
PHOTOWCT2_RULE = PCA_KD_RULE  # chiutaiyin/PhotoWCT2 demo ``stylize_zca``: the same authors' same ZCA
# NVIDIA/FastPhotoStyle photo_wct.py ``__wct_core``: only the *content* covariance gets ``+ I`` (WCT² adds it to both)
PHOTOWCT_RULE = Whitening(content_reg=1.0, style_reg=0.0, unbiased=True)
# pkuanjie/StyleNAS PhotoNAS/wct.py: the content covariance reshaped as 1.5 C + diag(C), eigenvalues below 1e-6 dropped
PHOTONAS_RULE = Whitening(eig_floor=1e-6, content_scale=1.5, content_diag=1.0)


def _col_chunks(flat: torch.Tensor) -> Iterator[torch.Tensor]:
    step = max(1, _CHUNK_ELEMENTS // max(1, flat.shape[0]))
    for start in range(0, flat.shape[1], step):
        yield flat[:, start : start + step].double()


def _moments(
    chunks: Callable[[], Iterator[torch.Tensor]], c: int, n: int, unbiased: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance from one pass over float64 chunks, with products taken about a pilot mean (the first
    chunk's): ``sum (x-p)(x-p)^T - n (m-p)(m-p)^T`` has no ``E[xx^T] - mm^T`` cancellation as long as ``p`` is near
    ``m``, and each chunk is converted to float64 once."""
    total = torch.zeros(c, 1, dtype=torch.float64, device=device)
    products = torch.zeros(c, c, dtype=torch.float64, device=device)
    pilot: torch.Tensor | None = None
    for chunk in chunks():
        if pilot is None:
            pilot = chunk.mean(dim=1, keepdim=True)
        shifted = chunk - pilot
        total += shifted.sum(dim=1, keepdim=True)
        products += shifted @ shifted.T
    if pilot is None:
        pilot = torch.zeros(c, 1, dtype=torch.float64, device=device)
    offset = total / max(n, 1)
    cov = (products - n * (offset @ offset.T)) / max(n - 1 if unbiased else n, 1)
    return pilot + offset, cov


def covariance(flat: torch.Tensor, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``(C, 1)`` and covariance ``(C, C)`` of ``(C, N)`` features (divided by N-1, or N), in float64.

    Accumulated over column chunks, so a 4K image's relu1_1 features (24-64 x 8.3M) never exist as a float64 copy
    (that alone would be 1.6-4 GB)."""
    return _moments(lambda: _col_chunks(flat), flat.shape[0], flat.shape[1], unbiased, flat.device)


def map_covariance(feat: torch.Tensor, valid: Valid = None, unbiased: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`covariance` of a (1, C, H, W) map's ``valid`` region, read in row chunks (any memory layout)."""
    region = _crop(feat, valid)
    n = region.shape[2] * region.shape[3]
    return _moments(lambda: _row_chunks(region), region.shape[1], n, unbiased, feat.device)


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


def transform_matrix(c_cov: torch.Tensor, s_cov: torch.Tensor, rule: Whitening = WCT_RULE) -> torch.Tensor:
    """``T = E_s D_s^1/2 E_s^T E_c D_c^-1/2 E_c^T`` (float64): WCT is ``T (f_c - m_c) + m_s``."""
    colour = colouring_matrix(s_cov, rule.eig_floor, rule.style_reg)
    if rule.content_scale != 1.0 or rule.content_diag:
        c_cov = rule.content_scale * c_cov + rule.content_diag * torch.diag(torch.diagonal(c_cov))
    return colour @ whitening_matrix(c_cov, rule.eig_floor, rule.content_reg)


def wct_matrix(
    content: torch.Tensor, style: torch.Tensor, rule: Whitening = WCT_RULE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(T, m_c, m_s)`` of ``(C, Nc)`` content and ``(C, Ns)`` style features, float64."""
    if content.shape[0] != style.shape[0]:
        raise ValueError(f"WCT needs the same channel count: content {content.shape[0]}, style {style.shape[0]}")
    c_mean, c_cov = covariance(content, rule.unbiased)
    s_mean, s_cov = covariance(style, rule.unbiased)
    return transform_matrix(c_cov, s_cov, rule), c_mean, s_mean


@exact
def wct_flat(content: torch.Tensor, style: torch.Tensor, rule: Whitening = WCT_RULE) -> torch.Tensor:
    """Whitening-colouring of ``(C, Nc)`` content features onto ``(C, Ns)`` style features, in float32."""
    matrix, c_mean, s_mean = wct_matrix(content, style, rule)
    dtype = content.dtype
    out = matrix.to(dtype) @ (content - c_mean.to(dtype)) + s_mean.to(dtype)
    return out.clamp(float(content.min()), float(content.max())) if rule.clamp else out


@exact
def wct_map(
    content: torch.Tensor, style: torch.Tensor, rule: Whitening = WCT_RULE, valid: Valid = None
) -> torch.Tensor:
    """Whitening-colouring of a (1, C, H, W) content map onto a style map: statistics over the content's ``valid``
    region, the transform applied to every position, the result in the content's memory layout."""
    _check_single(content, style)
    c_mean, c_cov = map_covariance(content, valid, rule.unbiased)
    s_mean, s_cov = map_covariance(style, None, rule.unbiased)
    out = _affine(content, transform_matrix(c_cov, s_cov, rule), c_mean, s_mean)
    if rule.clamp:
        region = _crop(content, valid)
        out = out.clamp(float(region.min()), float(region.max()))
    return out


def whiten_colour(
    fc: torch.Tensor,
    fs: torch.Tensor,
    reg: float = 1.0,
    unbiased: bool = False,
    clamp: bool = False,
    eps_rank: float = EIG_FLOOR,
) -> torch.Tensor:
    """The photorealistic family's call on ``(C, N)`` features: ``(Cs + reg I)^1/2 (Cc + reg I)^-1/2 (fc - mu_c)
    + mu_s``."""
    return wct_flat(fc, fs, Whitening(reg, reg, unbiased, eps_rank, clamp))


def wct(
    content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0, eig_floor: float = EIG_FLOOR, valid: Valid = None
) -> torch.Tensor:
    """WCT on ``(1, C, H, W)`` feature maps with the alpha blend of Li et al. Eq. 5."""
    return blend(wct_map(content, style, Whitening(eig_floor=eig_floor), valid), content, alpha)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an ``(H, W)`` integer label map to a feature map's spatial size."""
    if tuple(labels.shape) == tuple(size):
        return labels.long()
    resized = F.interpolate(labels[None, None].double(), size=size, mode="nearest")
    return resized[0, 0].round().long()


@exact
def wct_masked(
    content: torch.Tensor,
    style: torch.Tensor,
    content_labels: torch.Tensor,
    style_labels: torch.Tensor,
    alpha: float = 1.0,
    eig_floor: float = EIG_FLOOR,
    min_pixels: int = MIN_SEGMENT_PIXELS,
    valid: Valid = None,
) -> torch.Tensor:
    """Segment-wise WCT: each content label takes the statistics of the same label in the style.

    Label maps may be at image resolution; they are resized (nearest) to the feature maps. Content labels that
    the style lacks (or has fewer than ``min_pixels`` positions of), and content segments too small to estimate a
    covariance from, receive the global transform - the fallback the segment-wise variants of WCT use. Statistics
    use the ``valid`` region only; every position of a segment, padded ones included, gets that segment's transform.
    """
    _check_single(content, style)
    c = content.shape[1]
    rule = Whitening(eig_floor=eig_floor)
    c_lab = resize_labels(content_labels.to(content.device), tuple(content.shape[-2:]))
    s_lab = resize_labels(style_labels.to(style.device), tuple(style.shape[-2:])).reshape(-1)
    in_image = torch.zeros_like(c_lab, dtype=torch.bool)
    vh, vw = valid if valid is not None else c_lab.shape
    in_image[:vh, :vw] = True
    c_lab, in_image = c_lab.reshape(-1), in_image.reshape(-1)
    c_flat, s_flat = content.reshape(c, -1), style.reshape(c, -1)
    out = wct_map(content, style, rule, valid).reshape(c, -1).contiguous()  # global: the fallback
    s_counts = torch.bincount(s_lab)
    for label in torch.unique(c_lab[in_image]).tolist():
        stat_idx = ((c_lab == label) & in_image).nonzero(as_tuple=True)[0]
        if stat_idx.numel() < min_pixels or label >= s_counts.numel() or int(s_counts[label]) < min_pixels:
            continue
        s_idx = (s_lab == label).nonzero(as_tuple=True)[0]
        matrix, c_mean, s_mean = wct_matrix(c_flat[:, stat_idx], s_flat[:, s_idx], rule)
        all_idx = (c_lab == label).nonzero(as_tuple=True)[0]
        segment = c_flat[:, all_idx]
        out[:, all_idx] = matrix.to(segment.dtype) @ (segment - c_mean.to(segment.dtype)) + s_mean.to(segment.dtype)
    return blend(out.reshape(content.shape), content, alpha)


def _check_single(content: torch.Tensor, style: torch.Tensor) -> None:
    if content.dim() != 4 or style.dim() != 4 or content.shape[0] != 1 or style.shape[0] != 1:
        raise ValueError(f"WCT works on single (1, C, H, W) maps, got {tuple(content.shape)} and {tuple(style.shape)}")


# -- colour ----------------------------------------------------------------------------------------------------------
COLOUR_MODES = ("none", "coral", "covariance")


def colour_mode(value: Any) -> str:
    """``preserve_color`` as one of :data:`COLOUR_MODES`; ``True`` means the reference code's ``coral``."""
    if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1")):
        return "coral"
    if (
        value is False
        or value is None
        or (isinstance(value, str) and value.strip().lower() in ("false", "no", "off", "0", ""))
    ):
        return "none"
    if value not in COLOUR_MODES:
        raise ValueError(f"preserve_color must be one of {', '.join(COLOUR_MODES)} (or true/false), got {value!r}")
    return str(value)


@exact
def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The AdaIN reference code's colour preservation (naoto0804/pytorch-AdaIN ``function.coral``), exactly.

    Per channel, ``source`` (1, 3, H, W) is standardised (mean, unbiased std); its 3x3 matrix ``S = X X^T + I`` is
    built from the *summed* (not averaged) products of the standardised values, likewise ``T`` for ``target``;
    the result is ``sqrt(T) sqrt(S)^-1 X`` rescaled by the target's std and shifted by its mean. Because the sums
    grow with the pixel count, the colour map depends on both images' sizes; there is no clamp. Computed in float64.
    """

    def standardised(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flat = img.reshape(3, -1).double()
        mean, std = flat.mean(dim=1, keepdim=True), flat.std(dim=1, keepdim=True)
        return (flat - mean) / std, mean, std

    def mat_sqrt(m: torch.Tensor) -> torch.Tensor:
        u, d, v = torch.linalg.svd(m)
        return u @ torch.diag(d.sqrt()) @ v

    eye = torch.eye(3, dtype=torch.float64, device=source.device)
    src, _, _ = standardised(source)
    tgt, t_mean, t_std = standardised(target)
    moved = mat_sqrt(tgt @ tgt.T + eye) @ torch.linalg.inv(mat_sqrt(src @ src.T + eye)) @ src
    return (moved * t_std + t_mean).reshape(source.shape).to(source.dtype)


@exact
def match_colour(source: torch.Tensor, target: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Recolour ``source`` (1, 3, H, W) so its RGB mean and covariance equal ``target``'s (linear colour transfer,
    Gatys et al. 2017), clamped to [0, 1]; ``eps`` regularises flat-coloured images."""
    src = source.reshape(3, -1).double()
    tgt = target.reshape(3, -1).double()
    s_mean, s_cov = covariance(src)
    t_mean, t_cov = covariance(tgt)
    eye = torch.eye(3, dtype=torch.float64, device=source.device) * eps
    transform = colouring_matrix(t_cov + eye, 0.0) @ whitening_matrix(s_cov + eye, 0.0)
    out = transform @ (src - s_mean) + t_mean
    return out.reshape(source.shape).to(source.dtype).clamp(0, 1)


def recolour(style: torch.Tensor, content: torch.Tensor, mode: str) -> torch.Tensor:
    """The style image prepared for colour preservation ``mode`` (``none`` returns it unchanged)."""
    if mode == "coral":
        return coral(style, content)
    if mode == "covariance":
        return match_colour(style, content)
    return style


# -- global higher-order statistics: EFDM --------------------------------------------------------------------------
_SORT_ELEMENTS = 1 << 25  # values sorted at once: channels are processed in groups of at most this many elements


def _quantiles(sorted_style: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` values of each row's empirical quantile function (rows sorted ascending): the row itself when it has
    ``n`` entries, else linear interpolation at the midpoints ``(i + 0.5) / n`` (a resampled histogram)."""
    m = sorted_style.shape[1]
    if m == n:
        return sorted_style
    pos = (torch.arange(n, dtype=torch.float64, device=sorted_style.device) + 0.5) * (m / n) - 0.5
    pos = pos.clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    frac = (pos - lo).to(sorted_style.dtype)
    return sorted_style[:, lo] * (1 - frac) + sorted_style[:, hi] * frac


@exact
def efdm(content: torch.Tensor, style: torch.Tensor, valid: Valid = None) -> torch.Tensor:
    """Exact Feature Distribution Matching (Zhang et al. CVPR 2022, Eq. 5): per channel, the content value of rank r
    becomes the style's value of rank r ("exact histogram matching" by sorting), so every channel's empirical
    distribution, hence every moment, equals the style's.

    Ranks come from the ``valid`` region only (ties broken by position, as ``torch.sort`` does in the reference
    code); when style and content have different pixel counts the style's sorted values are resampled to the
    content's count (the reference code needs equal sizes). Positions outside ``valid`` (padding) take the style
    value at their rank among the valid content values. Channels are sorted in groups, so a 4K map never needs more
    than a few hundred MiB at once.
    """
    _check_single(content, style)
    out = content.clone()
    region = _crop(content, valid)
    c, vh, vw = region.shape[1:]
    n = vh * vw
    group = max(1, _SORT_ELEMENTS // max(n, style.shape[2] * style.shape[3]))
    padded = tuple(region.shape[-2:]) != tuple(content.shape[-2:])
    for start in range(0, c, group):
        stop = min(c, start + group)
        values = region[0, start:stop].reshape(stop - start, n)
        order = values.argsort(dim=1, stable=True)
        targets = _quantiles(style[0, start:stop].reshape(stop - start, -1).sort(dim=1).values, n)
        matched = torch.empty_like(values).scatter_(1, order, targets.to(values.dtype))
        if padded:
            rows = content[0, start:stop].reshape(stop - start, -1)
            ranks = torch.searchsorted(values.gather(1, order).contiguous(), rows.contiguous()).clamp(max=n - 1)
            full = targets.to(values.dtype).gather(1, ranks).reshape(stop - start, *content.shape[-2:])
            full[:, :vh, :vw] = matched.reshape(stop - start, vh, vw)
            out[0, start:stop] = full
        else:
            out[0, start:stop] = matched.reshape(stop - start, vh, vw)
    return out


# -- local statistics: style swap ----------------------------------------------------------------------------------
_SWAP_ELEMENTS = 1 << 26  # correlation-map entries (patches x positions) computed at once: 256 MiB in float32


def style_patches(style: torch.Tensor, patch: int = 3) -> torch.Tensor:
    """Every ``patch x patch`` window of a (1, C, H, W) map (stride 1, no padding) as rows ``(K, C, patch, patch)``."""
    c = style.shape[1]
    cols = F.unfold(style.contiguous(), patch)  # (1, C*p*p, K)
    return cols[0].T.reshape(-1, c, patch, patch)


def best_patches(content: torch.Tensor, patches: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """For each ``patch x patch`` window of ``content`` (no padding), the index of the style patch with the largest
    normalised cross-correlation (Chen & Schmidt 2016, Eq. 1: ``<phi_c, phi_s> / |phi_s|``; the content norm does not
    change the argmax). The correlation is a convolution with the normalised patches as filters, computed over chunks
    of style patches with a running max, so memory stays bounded whatever the number of patches."""
    norms = patches.flatten(1).norm(dim=1).clamp_min(eps)
    filters = patches / norms[:, None, None, None]
    positions = (content.shape[2] - patches.shape[2] + 1) * (content.shape[3] - patches.shape[3] + 1)
    chunk = max(1, _SWAP_ELEMENTS // max(1, positions))
    best_val = torch.full((positions,), -float("inf"), dtype=content.dtype, device=content.device)
    best_idx = torch.zeros(positions, dtype=torch.long, device=content.device)
    for start in range(0, filters.shape[0], chunk):
        scores = F.conv2d(content, filters[start : start + chunk].to(content.dtype))[0].reshape(-1, positions)
        val, idx = scores.max(dim=0)
        better = val > best_val  # strict: the first maximum wins, as a single argmax over all patches would
        best_val = torch.where(better, val, best_val)
        best_idx = torch.where(better, idx + start, best_idx)
    return best_idx


@exact
def style_swap(content: torch.Tensor, style: torch.Tensor, patch: int = 3, valid: Valid = None) -> torch.Tensor:
    """Style swap (Chen & Schmidt, "Fast Patch-based Style Transfer of Arbitrary Style", 2016): every content patch is
    replaced by its best-matching style patch (:func:`best_patches`) and overlapping patches are averaged - the
    paper's transposed convolution of the one-hot argmax map with the un-normalised patches, divided by the overlap
    count, computed here as a fold of the chosen patches (no K x positions one-hot map is ever built).

    Only the ``valid`` region is swapped (and only its patches are matched); padded positions keep their content
    features. Float32, any layout; the style map should be the style image's own features (no padding)."""
    _check_single(content, style)
    region = _crop(content, valid).contiguous()
    vh, vw = region.shape[-2:]
    if min(vh, vw) < patch or min(style.shape[-2:]) < patch:
        raise ValueError(f"style swap needs maps of at least {patch}x{patch}: content {vh}x{vw}, style "
                         f"{tuple(style.shape[-2:])}")  # fmt: skip
    patches = style_patches(style.to(region.dtype), patch)
    chosen = patches[best_patches(region, patches)]  # (positions, C, p, p)
    cols = chosen.reshape(chosen.shape[0], -1).T[None]  # (1, C*p*p, positions)
    summed = F.fold(cols, (vh, vw), patch)
    counts = F.fold(torch.ones_like(cols[:, :patch * patch]), (vh, vw), patch)  # fmt: skip
    out = content.clone()
    out[..., :vh, :vw] = summed / counts
    return out


# -- the family: one name per transform, the signature every autoencoder method calls ------------------------------
FeatureTransform = Callable[[torch.Tensor, torch.Tensor, Valid], torch.Tensor]
FEATURE_TRANSFORMS: dict[str, FeatureTransform] = {}


def register_transform(name: str) -> Callable[[FeatureTransform], FeatureTransform]:
    """Add ``fn(content_map, style_map, valid) -> map`` to :data:`FEATURE_TRANSFORMS` under ``name``."""

    def add(fn: FeatureTransform) -> FeatureTransform:
        if name in FEATURE_TRANSFORMS:
            raise ValueError(f"feature transform '{name}' is registered twice")
        FEATURE_TRANSFORMS[name] = fn
        return fn

    return add


register_transform("adain")(lambda c, s, valid: adain(c, s, valid=valid))  # mean/variance
register_transform("wct")(lambda c, s, valid: wct_map(c, s, WCT_RULE, valid))  # covariance
register_transform("efdm")(efdm)  # global higher-order statistics
register_transform("styleswap")(lambda c, s, valid: style_swap(c, s, 3, valid))  # local statistics


def feature_transform(name: str) -> FeatureTransform:
    """The registered transform ``name``, or a one-line error listing the names."""
    if name not in FEATURE_TRANSFORMS:
        raise ValueError(f"unknown feature transform '{name}': registered are {', '.join(sorted(FEATURE_TRANSFORMS))}")
    return FEATURE_TRANSFORMS[name]
