"""Li, Fang, Yang, Wang, Lu, Yang, "Universal Style Transfer via Feature Transforms", NeurIPS 2017.

Multi-level coarse-to-fine stylisation (paper Fig. 3c): for level k = 5 .. 1, encode the current image and the style
with the normalised VGG-19 to relu{k}_1, whiten the content features and colour them with the style covariance
(eigendecompositions in float64, see ``methods/_transforms.py``), blend with the content features by alpha (Eq. 5),
and decode with that level's decoder; the result feeds the next, finer level. The first level starts from the
content image. With segmentation masks (``use_masks``), each content segment takes the statistics of the same
segment of the style (labels the style lacks fall back to the global transform).

Weight sets, in the order the harness tries them:

- ``official``: the 5 normalised-VGG encoder/decoder pairs of the paper (PyTorch conversions of the Torch7 release,
  as committed in pietrocarbo/deep-transfer). Levels 4-5 are downloaded (not obtainable on the project's machines).
- ``official-l3``: the same official models, levels relu3_1..relu1_1 only - what the project's mirror holds. It is
  *not* the paper's method (the coarse relu4_1/relu5_1 passes that transfer large-scale structure are missing), so
  its results carry their own label.
- ``cd16x``: the 5 levels of Collaborative Distillation's 16x-compressed students (Wang et al. CVPR 2020), which
  the authors trained as a drop-in replacement for WCT's autoencoders. Fully offline.
"""

from __future__ import annotations

from typing import Any

import torch
from evalkit_methods import _transforms as T
from evalkit_methods import _vgg_autoencoders as AE
from evalkit_methods._multilevel import MultiLevelTransfer, autoencoder_weight_sets

from evalkit.adapter import Masks, Param

WCT_WEIGHT_SETS = autoencoder_weight_sets()


def _eig_floor(value: object) -> str | float:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    floor = float(value)  # type: ignore[arg-type]
    if not floor > 0:
        raise ValueError(f"eig_floor must be 'auto' or a positive number, got {value!r}")
    return floor


class WCT(MultiLevelTransfer):
    name = "wct"
    kind = "artistic"
    version = "1"
    description = "Whitening-colouring transforms, coarse-to-fine over VGG-19 relu5_1..relu1_1"
    citation = "Li et al. Universal Style Transfer via Feature Transforms. NeurIPS 2017"
    weight_sets = WCT_WEIGHT_SETS
    uses_masks = True
    transform = "wct"
    params = {
        "alpha": Param(1.0, "content-style trade-off in [0, 1] at every level (Eq. 5; 1 = full style)", low=0, high=1),
        "use_masks": Param(True, "segment-wise transfer when the protocol provides masks"),
        "eig_floor": Param(
            "auto",
            "eigenvalues below this are dropped; auto = the weight set's official code (1e-5 for official WCT, 1e-100 "
            "for Collaborative Distillation's cd16x)",
            check=_eig_floor,
        ),
    }

    def transform_level(
        self,
        content: torch.Tensor,
        style: torch.Tensor,
        valid: tuple[int, int],
        params: dict[str, Any],
        masks: Masks | None,
        multiple: int,
    ) -> torch.Tensor:
        alpha = float(params["alpha"])
        default = T.CD16X_EIG_FLOOR if self.layout == "cd16x" else T.EIG_FLOOR
        eig_floor = default if params["eig_floor"] == "auto" else float(params["eig_floor"])
        if masks is not None and bool(params["use_masks"]):
            c_labels = AE.pad_to_multiple(masks.content[None, None].double(), multiple)[0, 0].round().long()
            return T.wct_masked(content, style, c_labels, masks.style, alpha, eig_floor, valid=valid)
        return T.wct(content, style, alpha, eig_floor, valid=valid)
