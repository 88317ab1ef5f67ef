"""Segment-wise application of whitening-colouring as the photorealistic WCT family does it (PhotoWCT, WCT², PCA-KD).

The transform itself is the one core in :mod:`evalkit_methods._transforms` (:class:`~._transforms.Whitening`): the
photorealistic codes differ from plain WCT only in its parameters - ``cov + I`` for the content only (PhotoWCT,
NVIDIA/FastPhotoStyle) or for content and style (clovaai/WCT2 ``utils/core.py``, chiutaiyin's PCA-KD and PhotoWCT2),
covariance over N-1 (PhotoWCT, WCT²) or N (PCA-KD), and WCT²'s clamp to the content range. What is specific to them,
and lives here, is which segments of the masks are matched (FastPhotoStyle ``__compute_label_info``, copied by
clovaai/WCT2) and how anti-aliased mask colours are cleaned.
"""

from __future__ import annotations

import torch
from evalkit_methods._transforms import WCT2_RULE, Whitening, blend, resize_labels, wct_flat, wct_map, whiten_colour

__all__ = ["clean_labels", "transfer", "valid_labels", "whiten_colour"]


def valid_labels(
    content: torch.Tensor, style: torch.Tensor, min_pixels: int = 10, max_ratio: float = 100.0
) -> list[int]:
    """Labels present in both masks with > min_pixels pixels each and an area ratio below max_ratio.

    The rule of clovaai/WCT2 ``compute_label_info``: a segment too small or too unbalanced gives a covariance
    estimate that is noise, so such segments keep their content features.
    """
    c_labels, c_counts = torch.unique(content, return_counts=True)
    s_count = {int(k): int(v) for k, v in zip(*torch.unique(style, return_counts=True), strict=False)}
    out = []
    for label, c_size in zip(c_labels.tolist(), c_counts.tolist(), strict=False):
        s_size = s_count.get(label, 0)
        if c_size > min_pixels and s_size > min_pixels and c_size / s_size < max_ratio and s_size / c_size < max_ratio:
            out.append(label)
    return out


def clean_labels(labels: torch.Tensor, min_fraction: float = 0.005) -> torch.Tensor:
    """Give pixels of negligible labels the label of the nearest pixel of a significant one.

    Why: the DPST masks are colour-coded PNGs whose region borders are anti-aliased (in4.png: 2,667 distinct
    colours, 2.3 % of pixels off the palette). Mapped colour-by-colour to labels, every border shade becomes its
    own "segment". The original code snaps every colour to the nearest of its 9 palette colours
    (clovaai/WCT2 ``utils/io.py`` ``change_seg``); the adapter only receives labels, so it does the spatial
    equivalent: labels covering less than ``min_fraction`` of the map (border shades cover < 0.2 %) are replaced by
    the nearest significant label (Euclidean distance transform). A map without such labels is returned unchanged.
    """
    from scipy import ndimage

    flat = labels.reshape(-1)
    values, counts = torch.unique(flat, return_counts=True)
    keep = values[counts >= min_fraction * flat.numel()]
    if keep.numel() == values.numel() or keep.numel() == 0:
        return labels
    minor = ~torch.isin(labels, keep)
    _, (iy, ix) = ndimage.distance_transform_edt(minor.cpu().numpy(), return_indices=True)
    cleaned = labels.cpu()[torch.from_numpy(iy), torch.from_numpy(ix)]
    return cleaned.to(labels.device)


def transfer(
    content_feat: torch.Tensor,
    style_feat: torch.Tensor,
    masks=None,
    labels: list[int] | None = None,
    alpha: float = 1.0,
    rule: Whitening = WCT2_RULE,
) -> torch.Tensor:
    """Whitening-colouring of (1, C, H, W) features under ``rule``, globally or per segment, blended with the content
    by alpha.

    With masks (an ``evalkit.adapter.Masks``), label maps are resized to each feature map; features of a label that
    is not in ``labels`` or not present at this resolution in either map keep their content values.
    """
    if masks is None:  # the map-level transform: statistics in row chunks, result in the content's memory layout
        return blend(wct_map(content_feat, style_feat, rule), content_feat, alpha)
    _, c, h, w = content_feat.shape
    fc = content_feat.reshape(c, h * w)
    fs = style_feat.reshape(c, -1)
    c_lab = resize_labels(masks.content, (h, w)).reshape(-1)
    s_lab = resize_labels(masks.style, tuple(style_feat.shape[-2:])).reshape(-1)
    target = fc.clone()
    for label in labels if labels is not None else valid_labels(masks.content, masks.style):
        c_idx = torch.nonzero(c_lab == label).squeeze(1)
        s_idx = torch.nonzero(s_lab == label).squeeze(1)
        if c_idx.numel() == 0 or s_idx.numel() == 0:
            continue
        target[:, c_idx] = wct_flat(fc[:, c_idx], fs[:, s_idx], rule)
    return blend(target.reshape_as(content_feat), content_feat, alpha)
