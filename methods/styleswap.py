"""Chen & Schmidt, "Fast Patch-based Style Transfer of Arbitrary Style", NeurIPS Workshop on Constructive Machine
Learning 2016.

The transform of the "local statistics" family: at VGG-19 relu3_1, every 3x3 content patch is replaced by the style
patch of largest normalised cross-correlation and overlapping patches are averaged (:func:`_transforms.style_swap`:
the correlation is a convolution with the normalised style patches, chunked over patches so memory stays bounded;
the reconstruction is the paper's transposed convolution, computed as a fold of the chosen patches).

What differs from the paper: it trained its own inverse network for relu3_1 (and also optimised images); evalkit
decodes with the official WCT relu3_1 decoder (``official``) or Collaborative Distillation's (``cd16x``), which were
trained to invert relu3_1 features of natural images, not swapped ones.
"""

from __future__ import annotations

from evalkit_methods._multilevel import MultiLevelTransfer, autoencoder_weight_sets

from evalkit.adapter import Param


class StyleSwap(MultiLevelTransfer):
    name = "styleswap"
    kind = "artistic"
    version = "1"
    description = "3x3 patch swap at VGG-19 relu3_1 (normalised cross-correlation), decoded by the WCT relu3_1 decoder"
    citation = "Chen, Schmidt. Fast Patch-based Style Transfer of Arbitrary Style. 2016"
    weight_sets = autoencoder_weight_sets([3])
    transform = "styleswap"
    params = {"alpha": Param(1.0, "content-style trade-off in [0, 1] (1 = swapped features only)", low=0, high=1)}
