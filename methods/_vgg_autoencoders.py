"""Encoders and decoders of the VGG-19 autoencoder family (AdaIN, WCT, Collaborative Distillation), built to the
exact key layouts of the released checkpoints so that ``load_state_dict`` needs no renaming.

Two layouts (see the weights mirror's SOURCES.md, "Key layouts"):

- **official** ("vgg_normalised"): an ``nn.Sequential`` whose indices are the checkpoint keys. Index 0 is a fixed
  1x1 conv doing RGB->BGR, x255 and Caffe-mean subtraction; then ReflectionPad(1)+Conv3x3+ReLU per conv and
  MaxPool(2, ceil_mode=True) between blocks. relu1_1..relu5_1 are the outputs of indices 3/10/17/30/43. AdaIN's
  ``vgg_normalised.pth`` is the full network (34 tensors, to conv5_4); WCT's ``vgg_normalised_convK_1.pth`` are its
  prefixes. Decoders mirror the encoder (nearest x2 upsampling where it pooled, last conv without ReLU); AdaIN's
  ``decoder.pth`` has the same layout as WCT's level-4 decoder.
- **cd16x** (Collaborative Distillation, Wang et al. CVPR 2020): named keys ``conv0, conv11, conv12, ...``, widths
  16/32/64/128/128 (24 for the level-1 encoder), MaxPool(2) in floor mode, checkpoints wrapped as ``{'model': ...}``
  and carrying ``*_aux`` 1x1 distillation heads that inference does not use. Its decoders apply a ReLU after the
  final conv too (as the authors' code does).

Every loader validates keys and shapes first (:mod:`evalkit.checkpoints`, the one checker of evalkit) and raises one
line naming the file, the key and the expected shape, instead of PyTorch's multi-line ``load_state_dict`` report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from evalkit.checkpoints import load_checked, read_torch_state
from evalkit.errors import CheckpointError

__all__ = [
    "CheckpointError",
    "build_decoder",
    "build_encoder",
    "load_decoder",
    "load_encoder",
    "load_full_vgg",
    "pad_to_multiple",
    "synthetic_state",
]

Layout = Literal["official", "cd16x"]


# -- a tiny interpreter for conv/pool/upsample plans ---------------------------------------------------------------
@dataclass(frozen=True)
class Op:
    """One step: ``conv`` (3x3 with reflection pad, or 1x1 without), ``pool`` or ``up`` (nearest x2)."""

    kind: Literal["conv", "pool", "up"]
    name: str = ""
    cin: int = 0
    cout: int = 0
    ksize: int = 3
    relu: bool = True


class PlanNet(nn.Module):
    """A feed-forward conv net defined by a list of :class:`Op`; conv modules are registered under the checkpoint's
    own key names, so ``state_dict()`` keys equal the released file's keys."""

    def __init__(self, plan: list[Op], ceil_pool: bool) -> None:
        super().__init__()
        self.plan = plan
        self.ceil_pool = ceil_pool
        for op in plan:
            if op.kind == "conv":
                self.add_module(op.name, nn.Conv2d(op.cin, op.cout, op.ksize))
        self.requires_grad_(False)
        self.eval()

    @property
    def out_channels(self) -> int:
        return [op for op in self.plan if op.kind == "conv"][-1].cout

    @property
    def pools(self) -> int:
        return sum(op.kind == "pool" for op in self.plan)

    @property
    def resampling(self) -> int:
        """Poolings and upsamplings: layers in the speed tables' count (:func:`evalkit.adapter.count_layers`)."""
        return sum(op.kind in ("pool", "up") for op in self.plan)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_taps(x, [len(self.plan)])[len(self.plan)]

    def forward_taps(self, x: torch.Tensor, taps: list[int]) -> dict[int, torch.Tensor]:
        """The activations after the first ``n`` steps of the plan, for every ``n`` in ``taps`` (one pass)."""
        out: dict[int, torch.Tensor] = {}
        last = max(taps)
        for step, op in enumerate(self.plan[:last], start=1):
            x = self._step(op, x)
            if step in taps:
                out[step] = x
        return out

    def _step(self, op: Op, x: torch.Tensor) -> torch.Tensor:
        if op.kind == "pool":
            return F.max_pool2d(x, 2, 2, ceil_mode=self.ceil_pool)
        if op.kind == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if op.ksize == 3:
            x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        x = getattr(self, op.name)(x)
        return F.relu(x, inplace=True) if op.relu else x  # in place: x is the conv's fresh output

    def is_prefix_of(self, other: PlanNet) -> bool:
        """Whether this net is exactly the first steps of ``other`` with the same weights (the official WCT encoders
        are prefixes of one normalised VGG-19), so that ``other.forward_taps`` yields this net's output too."""
        if other.plan[: len(self.plan)] != self.plan:
            return False
        theirs = other.state_dict()
        return all(k in theirs and torch.equal(v, theirs[k]) for k, v in self.state_dict().items())


# -- architecture tables -------------------------------------------------------------------------------------------
VGG_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}
VGG_CONVS_PER_BLOCK = {1: 2, 2: 2, 3: 4, 4: 4, 5: 4}
CD_CHANNELS = {1: 16, 2: 32, 3: 64, 4: 128, 5: 128}
CD_LEVEL1_WIDTH = 24  # the level-1 student is wider than the deeper students' first block


def _official_encoder_plan(depth: int, full_block: bool = False) -> list[Op]:
    """naoto0804 ``net.vgg`` indices: 0 = 1x1 conv; each 3x3 conv is (pad, conv, relu) = 3 indices; pool = 1."""
    plan = [Op("conv", "0", 3, 3, ksize=1, relu=False)]
    index, cin = 1, 3
    for block in range(1, depth + 1):
        if block > 1:
            plan.append(Op("pool"))
            index += 1
        n = VGG_CONVS_PER_BLOCK[block] if (block < depth or full_block) else 1
        for _ in range(n):
            cout = VGG_CHANNELS[block]
            plan.append(Op("conv", str(index + 1), cin, cout))
            index += 3
            cin = cout
    return plan


def _official_decoder_plan(level: int) -> list[Op]:
    """Mirror of the encoder to relu{level}_1: Sequential indices (pad, conv, relu[, up]) as in the releases."""
    plan: list[Op] = []
    index = 0

    def conv(cin: int, cout: int, relu: bool = True) -> None:
        nonlocal index
        plan.append(Op("conv", str(index + 1), cin, cout, relu=relu))
        index += 3 if relu else 2

    for block in range(level, 1, -1):
        conv(VGG_CHANNELS[block], VGG_CHANNELS[block - 1])
        plan.append(Op("up"))
        index += 1
        for _ in range(VGG_CONVS_PER_BLOCK[block - 1] - 1):
            conv(VGG_CHANNELS[block - 1], VGG_CHANNELS[block - 1])
    conv(VGG_CHANNELS[1], 3, relu=False)
    return plan


def _cd_width(block: int, level: int) -> int:
    return CD_LEVEL1_WIDTH if level == 1 else CD_CHANNELS[block]


def _cd_encoder_plan(level: int) -> list[Op]:
    plan = [Op("conv", "conv0", 3, 3, ksize=1, relu=False)]
    cin = 3
    for block in range(1, level + 1):
        if block > 1:
            plan.append(Op("pool"))
        n = VGG_CONVS_PER_BLOCK[block] if block < level else 1
        for i in range(1, n + 1):
            cout = _cd_width(block, level)
            plan.append(Op("conv", f"conv{block}{i}", cin, cout))
            cin = cout
    return plan


def _cd_decoder_plan(level: int) -> list[Op]:
    plan: list[Op] = []
    for block in range(level, 1, -1):
        width, narrower = CD_CHANNELS[block], CD_CHANNELS[block - 1]
        plan.append(Op("conv", f"conv{block}1", width, narrower))
        plan.append(Op("up"))
        n = VGG_CONVS_PER_BLOCK[block - 1]
        for i in range(n, 1, -1):
            plan.append(Op("conv", f"conv{block - 1}{i}", narrower, narrower))
    plan.append(Op("conv", "conv11", _cd_width(1, level), 3, relu=True))  # ReLU here too, as the authors' code
    return plan


def build_encoder(layout: Layout, level: int, full_vgg: bool = False) -> PlanNet:
    """Encoder from RGB [0, 1] to relu{level}_1. ``full_vgg``: the whole official VGG-19 (to conv5_4), for
    validating AdaIN's complete ``vgg_normalised.pth`` before truncating it."""
    _check_level(level)
    if layout == "official":
        plan = _official_encoder_plan(5 if full_vgg else level, full_block=full_vgg)
        return PlanNet(plan, ceil_pool=True)
    return PlanNet(_cd_encoder_plan(level), ceil_pool=False)


def build_decoder(layout: Layout, level: int) -> PlanNet:
    """Decoder from relu{level}_1 features back to RGB."""
    _check_level(level)
    if layout == "official":
        return PlanNet(_official_decoder_plan(level), ceil_pool=True)
    return PlanNet(_cd_decoder_plan(level), ceil_pool=False)


def truncate(net: PlanNet, level: int) -> PlanNet:
    """The prefix of a full official VGG up to relu{level}_1, sharing its (already loaded) conv modules."""
    prefix = _official_encoder_plan(level)
    out = PlanNet.__new__(PlanNet)
    nn.Module.__init__(out)
    out.plan, out.ceil_pool = prefix, net.ceil_pool
    for op in prefix:
        if op.kind == "conv":
            out.add_module(op.name, getattr(net, op.name))
    out.eval()
    return out


def _check_level(level: int) -> None:
    if level not in range(1, 6):
        raise ValueError(f"VGG-19 autoencoder level must be 1..5 (relu1_1..relu5_1), got {level}")


# -- checkpoint loading ----------------------------------------------------------------------------------------------
def _training_head(key: str) -> bool:
    """Collaborative Distillation's ``*_aux`` 1x1 distillation heads exist only for training: never loaded."""
    return key.endswith(("_aux.weight", "_aux.bias"))


def load_encoder(path: Path, layout: Layout, level: int) -> PlanNet:
    """Encoder to relu{level}_1 from a file holding exactly that encoder (WCT official levels, cd16x)."""
    net = build_encoder(layout, level)
    load_checked(net, read_torch_state(path), path, f"{layout} encoder to relu{level}_1", _training_head)
    return net


def load_full_vgg(path: Path, level: int) -> PlanNet:
    """AdaIN's complete ``vgg_normalised.pth`` (all 16 convs + the 1x1 input conv), truncated to relu{level}_1."""
    net = build_encoder("official", 5, full_vgg=True)
    load_checked(net, read_torch_state(path), path, "official normalised VGG-19 (34 tensors, to conv5_4)")
    return truncate(net, level)


def load_decoder(path: Path, layout: Layout, level: int) -> PlanNet:
    net = build_decoder(layout, level)
    load_checked(net, read_torch_state(path), path, f"{layout} decoder from relu{level}_1", _training_head)
    return net


# -- running an autoencoder on images of any size ------------------------------------------------------------------
def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflection-pad bottom/right so H and W are multiples of ``multiple``: the decoder then returns exactly the
    input size (floor-mode pooling would otherwise lose the last rows, ceil-mode would add some)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


def synthetic_state(net: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict with the exact keys/shapes of ``net`` and random values (tests build fake checkpoints with it)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in net.state_dict().items()}
