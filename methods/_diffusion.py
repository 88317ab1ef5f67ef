"""What the Stable Diffusion adapters (StyleID, InST) share: weights found in the Hugging Face cache, the five
``diffusers`` components loaded from a folder, the VAE's latent convention, and the native-size rule.

Why here and not in each adapter: both adapters load the same folder layout (a hub snapshot or a
``save_pretrained`` folder of ``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``), refuse contents
above the base model's native size the same way, and must agree on how an image becomes a latent and back.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from evalkit.assets import AssetStore
from evalkit.errors import EvalkitError, WeightsUnavailable
from evalkit.weights import WeightSet

INSTALL_HINT = "pip install 'evalkit[diffusion]'"


class UnsupportedSize(EvalkitError):
    """A content image above the model's native-resolution cap (``max_side``): a clear refusal, not an OOM."""


@dataclass(frozen=True)
class HubWeightSet(WeightSet):
    """Weights found by model id in the Hugging Face cache, never downloaded by evalkit.

    Why a subclass: a diffusers model is a folder of several components with its own cache, not sha256-pinned files
    in evalkit's asset store; ``resolve`` hands the adapter the cached snapshot folder (role ``pipeline``, plus one
    role per entry of ``extra``, e.g. InST's CLIP image encoder) or raises a one-line :class:`WeightsUnavailable`
    naming the model id and the command that fetches it."""

    model_id: str = ""
    cache_dir: str | None = None  # None: the hub's default (HF_HOME / HF_HUB_CACHE)
    extra: tuple[tuple[str, str], ...] = ()  # (role, model id) of further snapshots the adapter needs

    def _message(self, model_id: str, why: str) -> str:
        return (
            f"weight set '{self.name}': {why}; fetch it once with `huggingface-cli download {model_id}` "
            f"(needs {INSTALL_HINT})"
        )

    def snapshot(self, model_id: str | None = None) -> Path:
        model_id = model_id or self.model_id
        missing = [m for m in ("diffusers", "transformers", "huggingface_hub") if importlib.util.find_spec(m) is None]
        if missing:
            raise WeightsUnavailable(f"weight set '{self.name}' needs {', '.join(missing)}: {INSTALL_HINT}")
        from huggingface_hub import snapshot_download

        try:
            folder = snapshot_download(model_id, cache_dir=self.cache_dir, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 - any hub failure here means "not in the cache"
            raise WeightsUnavailable(self._message(model_id, f"{model_id} is not in the Hugging Face cache")) from exc
        return Path(folder)

    def resolve(self, store: AssetStore, download: bool = True) -> dict[str, Path]:
        return {"pipeline": self.snapshot(), **{role: self.snapshot(model_id) for role, model_id in self.extra}}

    def availability(self, store: AssetStore) -> tuple[str, str]:
        try:
            return "available", ", ".join(str(p) for p in self.resolve(store).values())
        except WeightsUnavailable as exc:
            return "missing", str(exc)


@dataclass
class SDParts:
    """Stable Diffusion's components as loaded on a device (``Any``: diffusers' lazy modules hide their types)."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any

    @property
    def factor(self) -> int:
        """Pixels per latent cell (8 on SD)."""
        return int(2 ** (len(self.vae.config.block_out_channels) - 1))

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"unet": self.unet, "vae": self.vae, "text_encoder": self.text_encoder}

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> [0, 1] image."""
        return (self.vae.decode(latent / self.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)

    def prompt(self, text: str) -> torch.Tensor:
        """The text encoder's last hidden state for ``text`` padded to the tokenizer's length (as SD conditions)."""
        tokens = self.tokenizer(
            [text], padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
            return_tensors="pt",
        )  # fmt: skip
        return self.text_encoder(tokens.input_ids.to(self.unet.device))[0]


def load_parts(method: str, folder: Path, device: torch.device) -> SDParts:
    """The five components of a diffusers folder (a hub snapshot or a ``save_pretrained`` folder), DDIM scheduler."""
    try:
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer
    except ImportError as exc:
        raise WeightsUnavailable(f"{method} needs diffusers and transformers: {INSTALL_HINT}") from exc
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet").to(device).eval()
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae").to(device).eval()
        text_encoder: Any = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder")  # typed oddly upstream
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        scheduler = DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    except (OSError, ValueError) as exc:
        raise WeightsUnavailable(
            f"{method}: {folder} is not a complete diffusers model folder: {first_line(exc)}"
        ) from exc
    for part in (unet, vae, text_encoder):
        part.requires_grad_(False)
    return SDParts(unet, vae, text_encoder.to(device).eval(), tokenizer, scheduler)


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def multiple_of(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """``size`` rounded to the nearest multiple of ``factor`` (at least one cell)."""
    return tuple(max(factor, round(s / factor) * factor) for s in size)  # type: ignore[return-value]


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


def native_sizes(
    method: str, content: torch.Tensor, style: torch.Tensor, max_side: int, factor: int
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Working sizes of content and style: the content at its own size (refused above ``max_side``), the style
    scaled down to fit ``max_side``, both rounded to multiples of the VAE's ``factor``."""
    h, w = content.shape[-2:]
    if max(h, w) > max_side:
        raise UnsupportedSize(
            f"{method}: content {w}x{h} exceeds max_side={max_side} (the base model's native resolution cap); "
            "run a smaller resolution or raise max_side"
        )
    sh, sw = style.shape[-2:]
    shrink = min(1.0, max_side / max(sh, sw))
    return multiple_of((h, w), factor), multiple_of((round(sh * shrink), round(sw * shrink)), factor)
