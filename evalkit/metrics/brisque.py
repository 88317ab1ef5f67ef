"""BRISQUE (Mittal, Moorthy & Bovik 2012), no-reference quality of the output, through pyiqa.

Definition (pyiqa ``brisque``, the original LIVE model, not ``brisque_matlab``): the output's luma (Y = 0.299
R + 0.587 G + 0.114 B, 0-255, rounded) at two scales (full, and half size by MATLAB-style bicubic ``imresize``
with antialiasing) gives 18 NSS features per scale (GGD fit of the MSCN coefficients with a 7x7 Gaussian of
sigma 7/6, AGGD fits of their horizontal, vertical and two diagonal products); the 36 features are scaled to
[-1, 1] with the LIVE ``allrange`` bounds and fed to the LIVE epsilon-SVR (RBF kernel, gamma 0.05, rho
-153.591, 774 support vectors): score = sum_i coef_i * exp(-0.05 * |x - sv_i|^2) - rho. Lower is better;
nominally 0 (best) .. 100 (worst) but not bounded (a pristine TID2013 image scores -0.1).

Weights: the original LIVE libsvm model file ``allmodel`` (utlive/BRISQUE, sha256 pinned below). evalkit
parses it into the ``(sv_coef, sv)`` float32 tensors pyiqa loads and caches them under
``$EVALKIT_HOME/derived``. It does not use pyiqa's own ``brisque_svm_weights.pth``: that is a pickle of the
same numbers whose bytes (and so sha256) depend on how it was saved and cannot be pinned here, whereas
``allmodel`` is the published source, byte-verifiable. The model's own header (gamma, rho) is checked against
the constants pyiqa hard-codes, so a different model file can never be paired with the wrong SVR constants.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import torch

from evalkit.assets import Asset, AssetStore
from evalkit.errors import AssetError
from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.iqa_assets import as_batch, create_pyiqa_metric
from evalkit.weights import WeightSet

BRISQUE_MODEL = Asset(
    name="iqa/brisque/allmodel",
    sha256="8b04d6045f1b27261610c8ab1730fdcc14ec80bfab0f1ab5f703bbc2927314de",
    kind="weights",
    url=("https://raw.githubusercontent.com/utlive/BRISQUE/2e2a5ac04cd4b73ac0f5867de5b974581fa2d4d2/MATLAB/allmodel"),
    size=353497,
)
PYIQA_GAMMA, PYIQA_RHO = 0.05, -153.591  # hard-coded in pyiqa.archs.brisque_arch.BRISQUE (version='original')
N_FEATURES = 36


def parse_libsvm_model(path: Path) -> tuple[dict[str, str], torch.Tensor, torch.Tensor]:
    """Read a libsvm text model: (header, sv_coef float32 [n], sv float32 [n, 36]); errors name the file."""
    header: dict[str, str] = {}
    coefs: list[float] = []
    rows: list[list[float]] = []
    lines = Path(path).read_text().splitlines()
    try:
        start = lines.index("SV") + 1
    except ValueError:
        raise AssetError(f"BRISQUE model {path} has no 'SV' line: it is not a libsvm model file") from None
    for line in lines[: start - 1]:
        key, _, value = line.partition(" ")
        header[key] = value.strip()
    for number, line in enumerate(lines[start:], start + 1):
        if not line.strip():
            continue
        coef, *pairs = line.split()
        row = [0.0] * N_FEATURES
        for pair in pairs:
            index, _, value = pair.partition(":")
            if not 1 <= int(index) <= N_FEATURES:
                raise AssetError(f"BRISQUE model {path} line {number}: feature index {index} outside 1..36")
            row[int(index) - 1] = float(value)
        coefs.append(float(coef))
        rows.append(row)
    if str(len(rows)) != header.get("total_sv"):
        raise AssetError(
            f"BRISQUE model {path}: {len(rows)} support vectors, header says "
            f"{header.get('total_sv')}: the file is truncated; supply the LIVE 'allmodel'"
        )
    return header, torch.tensor(coefs, dtype=torch.float32), torch.tensor(rows, dtype=torch.float32)


def derived_weights(model_path: Path, store: AssetStore) -> Path:
    """``(sv_coef, sv)`` as pyiqa's ``pretrained_model_path`` expects, derived once per digest."""
    digest = store.digest(model_path)
    target = store.home / "derived" / f"brisque_svm_{digest[:16]}.pth"
    if target.is_file():
        return target
    header, sv_coef, sv = parse_libsvm_model(model_path)
    gamma, rho = float(header.get("gamma", "nan")), float(header.get("rho", "nan"))
    if (gamma, rho) != (PYIQA_GAMMA, PYIQA_RHO):
        raise AssetError(
            f"BRISQUE model {model_path} has gamma={gamma}, rho={rho} but pyiqa's SVR uses "
            f"gamma={PYIQA_GAMMA}, rho={PYIQA_RHO}: supply the original LIVE 'allmodel'"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".tmp{os.getpid()}")  # per process: parallel workers never share a partial file
    torch.save((sv_coef, sv), str(tmp))
    tmp.replace(target)
    return target


class BRISQUE(Metric):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="brisque",
        higher_is_better=False,
        reference="none",
        range=(None, None),
        description="Blind/Referenceless Image Spatial Quality Evaluator (LIVE SVR); ~0 best, ~100 worst",
        weights=(BRISQUE_MODEL.name,),
        definition=(
            "LIVE epsilon-SVR (RBF, gamma 0.05, rho -153.591) on 36 NSS features of luma at 2 "
            "scales, scaled by LIVE allrange (pyiqa 'brisque', original release)"
        ),
    )
    weight_sets: ClassVar[dict[str, WeightSet]] = {
        "live": WeightSet("live", {"model": BRISQUE_MODEL}, "BRISQUE model (LIVE allmodel)", official=True)
    }

    def setup(self) -> None:
        weights = derived_weights(self.files()["model"], self.assets)
        self.net = create_pyiqa_metric("brisque", self.device, test_y_channel=True, pretrained_model_path=str(weights))

    def compute(self, sample: EvalSample, features=None) -> float:
        return float(self.net(as_batch(sample.output, self.device)))
