"""Work shared between metrics: one VGG-19 pass per image, Gram matrices once per style image.

Content and style losses both need VGG-19 activations of the output; the content image's activations are reused by
every method and seed of a pair, and the style image's Gram matrices by every pair and method using that style.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from evalkit.vgg import get_vgg19

CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
ALL_LAYERS = (CONTENT_LAYER, *STYLE_LAYERS)


def gram(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix G/M of (1, N, H, W) features, in float64: G_ij = sum_k F_ik F_jk, M = H*W."""
    _, n, h, w = features.shape
    flat = features.reshape(n, h * w).double()
    return flat @ flat.T / (h * w)


class SharedFeatures:
    """LRU caches of VGG-19 activations and normalised Grams, keyed by image identity."""

    def __init__(self, device: str | torch.device = "cpu", weight_set: str = "imagenet", capacity: int = 64) -> None:
        self.device = torch.device(device)
        self.weight_set = weight_set
        self.capacity = capacity
        self._features: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._grams: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.vgg_passes = 0  # counted so the benchmark (and tests) can check the sharing actually happens

    @property
    def vgg(self):
        return get_vgg19(self.weight_set, self.device)

    def features(self, key: str, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        with torch.no_grad():
            feats = self.vgg(image.to(self.device), ALL_LAYERS)
        self.vgg_passes += 1
        self._put(self._features, key, feats)
        return feats

    def grams(self, key: str, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if key in self._grams:
            self._grams.move_to_end(key)
            return self._grams[key]
        feats = self.features(key, image)
        grams = {layer: gram(feats[layer]) for layer in STYLE_LAYERS}
        self._put(self._grams, key, grams)
        return grams

    def _put(self, cache: OrderedDict, key: str, value: dict) -> None:
        cache[key] = value
        while len(cache) > self.capacity:
            cache.popitem(last=False)
