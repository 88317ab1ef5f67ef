"""Gatys et al. (2016) content and style losses as evaluation metrics.

Definitions (F = VGG-19 activations of the output, P = of the content image, A = of the style image; N_l channels,
M_l = H_l * W_l positions of layer l):

- content loss  L_c = 1/2 * sum_ij (F_ij - P_ij)^2 at ``conv4_2`` (the convolution output, before its ReLU);
- style loss    L_s = sum_l w_l * E_l over relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 with w_l = 1/5,
                E_l = 1/(4 N_l^2 M_l^2) * sum_ij (G_ij - A_ij)^2,  G = F F^T, A = S S^T (Gram matrices).

Gatys' E_l assumes output and style have the same M_l. evalkit compares images of different shapes, so it
normalises each Gram by its own M (G/M_out, A/M_style) and uses E_l = 1/(4 N_l^2) * sum (G/M_out - A/M_style)^2,
which is *identical* to the paper's formula whenever M_out = M_style. Images are evaluated at the protocol's
``eval_size`` (short side), with the ImageNet Caffe VGG-19 (input BGR 0-255 minus mean) and its own max pooling
(Gatys' optimiser defaults to average pooling; see methods/gatys.py). Lower is better for both.
Sums are accumulated in float64.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.features import CAFFE_VGG, CONTENT_LAYER, STYLE_LAYERS, FeatureProvider, gram, needs_of


def content_loss(output_feats: torch.Tensor, content_feats: torch.Tensor) -> float:
    diff = output_feats.double() - content_feats.double()
    return float(0.5 * (diff * diff).sum())


def style_loss(
    output_grams: dict[str, torch.Tensor], style_grams: dict[str, torch.Tensor], layers=STYLE_LAYERS
) -> float:
    total = 0.0
    for layer in layers:
        g, a = output_grams[layer], style_grams[layer]
        n = g.shape[0]
        total += (1.0 / len(layers)) * float(((g - a) ** 2).sum()) / (4.0 * n * n)
    return total


class ContentLoss(Metric):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="content_loss",
        higher_is_better=False,
        reference="content",
        range=(0.0, None),
        description="Gatys content loss at VGG-19 conv4_2 against the content image",
        weights=("vgg19[imagenet]",),
        definition="1/2 * sum (F - P)^2 at conv4_2 (pre-ReLU), ImageNet Caffe VGG-19 with max pooling, at eval size",
    )
    needs = needs_of(CAFFE_VGG, "output", "layer", (CONTENT_LAYER,)) + needs_of(
        CAFFE_VGG, "content", "layer", (CONTENT_LAYER,)
    )

    def compute(self, sample: EvalSample, features: FeatureProvider) -> float:
        out = features.features(sample.output_key, sample.output, "output")[CONTENT_LAYER]
        ref = features.features(sample.content_key, sample.content, "content")[CONTENT_LAYER]
        return content_loss(out, ref)


class StyleLoss(Metric):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="style_loss",
        higher_is_better=False,
        reference="style",
        range=(0.0, None),
        description="Gatys style loss (Gram matrices, relu1_1..relu5_1, equal weights) against the style image",
        weights=("vgg19[imagenet]",),
        definition=(
            "sum_l 1/5 * 1/(4 N^2) * sum (G/M_out - A/M_style)^2 over relu1_1..relu5_1, VGG-19 with max pooling, "
            "at eval size"
        ),
    )
    needs = needs_of(CAFFE_VGG, "output", "gram", STYLE_LAYERS) + needs_of(CAFFE_VGG, "style", "gram", STYLE_LAYERS)

    def compute(self, sample: EvalSample, features: FeatureProvider) -> float:
        out = features.grams(sample.output_key, sample.output, "output")
        ref = features.grams(sample.style_key, sample.style, "style")
        return style_loss(out, ref)


__all__ = ["ContentLoss", "StyleLoss", "content_loss", "style_loss", "gram"]
