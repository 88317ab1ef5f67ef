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


def gram(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix G/M of (1, N, H, W) features, in float64: G_ij = sum_k F_ik F_jk, M = H*W."""
    _, n, h, w = features.shape
    flat = features.reshape(n, h * w).double()
    return flat @ flat.T / (h * w)


@dataclass
class _Entry:
    content: torch.Tensor  # conv4_2 activations
    grams: dict[str, torch.Tensor]  # normalised Gram matrices per style layer


class SharedFeatures:
    """An LRU cache of what the losses need per image: ``conv4_2`` activations and normalised Grams.

    One VGG-19 pass per image fills both. Only these are kept (about 13 MB per 512 px image), not every layer's
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
        with torch.no_grad():
            feats = self.vgg(image.to(self.device), ALL_LAYERS)
        self.vgg_passes += 1
        entry = _Entry(feats[CONTENT_LAYER], {layer: gram(feats[layer]) for layer in STYLE_LAYERS})
        del feats
        self._entries[key] = entry
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry

    def features(self, key: str, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"conv4_2": activations}`` of ``image`` (the content representation)."""
        return {CONTENT_LAYER: self._entry(key, image).content}

    def grams(self, key: str, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised Gram matrices of ``image`` at relu1_1 ... relu5_1 (the same dict object while cached)."""
        return self._entry(key, image).grams
