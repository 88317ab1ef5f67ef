"""Work shared between metrics: one VGG-19 pass per image, Gram matrices once per style image.

Content and style losses both need VGG-19 activations of the output; the content image's activations are reused by
every method and seed of a pair, and the style image's Gram matrices by every pair and method using that style.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

from evalkit.assets import AssetStore
from evalkit.vgg import VGG19Features, get_vgg19

CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
ALL_LAYERS = (CONTENT_LAYER, *STYLE_LAYERS)


GRAM_BLOCK = 4096  # positions per float32 partial product; the partial products are summed in float64


def gram(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix G/M of (1, N, H, W) features: G_ij = sum_k F_ik F_jk, M = H*W, as float64.

    Read as (positions x channels) rows, a view of channels_last features (no transposed copy). Float64 inputs are
    multiplied in float64; float32 ones in blocks of :data:`GRAM_BLOCK` positions whose float32 products are
    accumulated in float64 - relative error ~1e-7 instead of ~1e-5 for one float32 product over all positions, at
    float32 speed (4x the float64 one on this CPU)."""
    _, n, h, w = features.shape
    rows = features.permute(0, 2, 3, 1).reshape(h * w, n)
    if rows.dtype == torch.float64:
        return rows.T @ rows / (h * w)
    total = torch.zeros(n, n, dtype=torch.float64, device=features.device)
    for start in range(0, h * w, GRAM_BLOCK):
        block = rows[start : start + GRAM_BLOCK].float()
        total += (block.T @ block).double()
    return total / (h * w)


MOMENT_EPS = 1e-5  # added to the variance, as the AdaIN-family reference code's calc_mean_std does
DEEP_LAYERS = ("relu4_1", "relu5_1")  # the content layers of the mean/std losses


def channel_moments(features: torch.Tensor, eps: float = MOMENT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (unbiased variance + ``eps``, square root) of (1, C, H, W) features, float64."""
    flat = features[0].double().reshape(features.shape[1], -1)
    return flat.mean(dim=1), (flat.var(dim=1, unbiased=True) + eps).sqrt()


@dataclass
class _Entry:
    content: torch.Tensor  # conv4_2 activations
    grams: dict[str, torch.Tensor]  # normalised Gram matrices per style layer
    moments: dict[str, tuple[torch.Tensor, torch.Tensor]]  # per style layer: channel mean, std
    deep: dict[str, torch.Tensor]  # relu4_1, relu5_1 activations


class SharedFeatures:
    """An LRU cache of what the losses need per image: ``conv4_2`` activations, normalised Grams, channel moments and
    the relu4_1/relu5_1 activations.

    One VGG-19 pass per image fills all. Only these are kept (about 30 MB per 512 px image), not every layer's
    activations (over 100 MB at 512 px: ``relu1_1`` alone is 64 x 512 x 512 floats), so a long run's memory stays flat.
    """

    def __init__(
        self, device: str | torch.device, store: AssetStore, weight_set: str = "imagenet", capacity: int = 32
    ) -> None:
        self.device = torch.device(device)
        self.store = store
        self.weight_set = weight_set
        self.capacity = capacity
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self.vgg_passes = 0  # counted so the benchmark (and tests) can check the sharing actually happens

    @property
    def vgg(self) -> VGG19Features:
        return get_vgg19(self.weight_set, self.device, self.store)

    def _entry(self, key: str, image: torch.Tensor) -> _Entry:
        if key in self._entries:
            self._entries.move_to_end(key)
            return self._entries[key]
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):  # metrics are float32, always
            model = self.vgg.to(memory_format=torch.channels_last)  # the exact fast path (a no-op once converted)
            feats = model(image.to(self.device).float().contiguous(memory_format=torch.channels_last), ALL_LAYERS)
        self.vgg_passes += 1
        entry = _Entry(
            feats[CONTENT_LAYER],
            {layer: gram(feats[layer]) for layer in STYLE_LAYERS},
            {layer: channel_moments(feats[layer]) for layer in STYLE_LAYERS},
            {layer: feats[layer] for layer in DEEP_LAYERS},
        )
        del feats
        self._entries[key] = entry
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry

    def features(self, key: str, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"conv4_2": activations}`` of ``image`` (the content representation)."""
        return {CONTENT_LAYER: self._entry(key, image).content}

    def moments(self, key: str, image: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-channel (mean, std) at relu1_1 ... relu5_1, for the mean/std style loss."""
        return self._entry(key, image).moments

    def deep(self, key: str, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """relu4_1 and relu5_1 activations, for the mean/std papers' content loss."""
        return self._entry(key, image).deep

    def grams(self, key: str, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised Gram matrices of ``image`` at relu1_1 ... relu5_1 (the same dict object while cached)."""
        return self._entry(key, image).grams
