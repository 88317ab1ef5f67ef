"""NIQE (Mittal, Soundararajan & Bovik 2013), no-reference naturalness of the output, through pyiqa.

Definition: the output's luma (Y = 0.299 R + 0.587 G + 0.114 B, 0-255, rounded) is cut into 96x96 blocks at
two scales (full and half size, MATLAB-style bicubic ``imresize``); each block gives 18 NSS features per scale
(GGD fit of the MSCN coefficients, AGGD fits of their four pairwise products). A multivariate Gaussian fitted
to the image's blocks is compared with the pristine-image model of the original LIVE release
(``modelparameters.mat``: ``mu_prisparam`` 1x36, ``cov_prisparam`` 36x36): NIQE = sqrt((mu_p - mu_d)^T
pinv((S_p + S_d)/2) (mu_p - mu_d)). Lower is more natural; unbounded above.

Weights: the LIVE ``modelparameters.mat`` (sha256 pinned below), resolved through evalkit's asset store and
passed to pyiqa as ``pretrained_model_path``. This is pyiqa's ``niqe`` (the original release), *not*
``niqe_matlab`` (the MATLAB Image Processing Toolbox's ``niqe()`` with a different model file), so its
reference values are the ``niqe`` rows of the calibration set, not the ``niqe_matlab`` ones.

Needs at least 96x96 pixels (one block); smaller images are an error with that reason.
"""

from __future__ import annotations

from typing import ClassVar

from evalkit.assets import Asset
from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.iqa_assets import PYIQA_WEIGHTS_URL, as_batch, create_pyiqa_metric
from evalkit.weights import WeightSet

NIQE_PARAMS = Asset(
    name="iqa/niqe/modelparameters.mat",
    sha256="fa2aa4d12dd9595c3fb6bf8b4e1a15c79d5d1469238d0901c88dead195be578d",
    kind="weights",
    url=PYIQA_WEIGHTS_URL + "niqe_modelparameters.mat",  # pyiqa's copy of the LIVE release file
    size=8347,
)
MIN_SIDE = 96


class NIQE(Metric):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="niqe",
        higher_is_better=False,
        reference="none",
        range=(0.0, None),
        description="Natural Image Quality Evaluator: distance of NSS statistics from pristine images",
        weights=(NIQE_PARAMS.name,),
        definition=(
            "sqrt((mu_p-mu_d)' pinv((S_p+S_d)/2) (mu_p-mu_d)), 36 NSS features of 96x96 luma "
            "blocks at 2 scales, LIVE modelparameters.mat (pyiqa 'niqe', original release)"
        ),
    )
    weight_sets: ClassVar[dict[str, WeightSet]] = {
        "live": WeightSet(
            "live", {"params": NIQE_PARAMS}, "NIQE pristine model (LIVE modelparameters.mat)", official=True
        )
    }

    def setup(self) -> None:
        path = self.files()["params"]
        self.net = create_pyiqa_metric(
            "niqe", self.device, test_y_channel=True, color_space="yiq", pretrained_model_path=str(path)
        )

    def compute(self, sample: EvalSample, features=None) -> float:
        out = as_batch(sample.output, self.device)
        h, w = out.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise ValueError(
                f"NIQE needs at least {MIN_SIDE}x{MIN_SIDE} pixels (one 96x96 block), got "
                f"{w}x{h}: raise the protocol's eval_size"
            )
        return float(self.net(out))
