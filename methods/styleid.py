"""Chung, Hyun, Heo, "Style Injection in Diffusion: A Training-free Approach for Adapting Large-scale Diffusion Models
for Style Transfer", CVPR 2024 (StyleID), on Stable Diffusion through ``diffusers``.

Written from the paper and the authors' ``diffusers_implementation/`` (jiwoogit/StyleID): VAE-encode content and style
(the posterior's mode, scaled by the VAE's scaling factor), DDIM-invert both (eta = 0, empty prompt, no guidance) over
``ddim_steps`` steps while recording, in the selected up-path self-attention layers, the content's queries and the
style's keys/values at every timestep; start from the AdaIN of the content's inverted latent to the style's
(``init_adain``) and denoise with the style's keys/values, the blended query ``gamma*q_c + (1-gamma)*q`` and the logits
scaled by ``temperature`` (``methods/_styleid_attention.py``). Everything is deterministic: the seed changes nothing.

Layers are numbered as the reference numbers them: one slot per resnet of the UNet's up blocks, up-block-major
(SD: 4 up blocks x 3 = slots 0-11, the first block without attention, so 3-11 are valid); a slot's layer is
``attentions[j].transformer_blocks[0].attn1`` of its block. Default 7-11: the last two of the 32x32 block and the three
of the 64x64 block (for a 512 image).

Sizes: the content is resized (bilinear, antialiased) to the nearest multiple of the VAE's downsampling factor (8 for
SD) and the output resized back; the style is resized to that multiple too and, when it is larger than ``max_side``,
scaled down to fit (it only supplies keys/values). A content larger than ``max_side`` is refused with a one-line
:class:`UnsupportedSize`, recorded as an ``error`` (reason ``bad-input``): evalkit has no ``unsupported`` status.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from evalkit_methods import _styleid_attention as S
from evalkit_methods._diffusion import HubWeightSet, UnsupportedSize, load_parts, native_sizes, resize

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_layers, count_parameters
from evalkit.errors import EvalkitError
from evalkit.weights import WeightSet

__all__ = ["WEIGHT_SETS", "HubWeightSet", "StyleID", "UnsupportedSize", "check_layers", "parse_layers"]


WEIGHT_SETS: dict[str, WeightSet] = {
    "sd21": HubWeightSet(
        "sd21",
        description="Stable Diffusion 2.1-base (stabilityai/stable-diffusion-2-1-base), the reference's default, "
        "from the Hugging Face cache",
        official=True,
        model_id="stabilityai/stable-diffusion-2-1-base",
    ),
    "sd14": HubWeightSet(
        "sd14",
        description="Stable Diffusion 1.4 (CompVis/stable-diffusion-v1-4), the paper's model, from the Hugging Face "
        "cache",
        model_id="CompVis/stable-diffusion-v1-4",
    ),
}


def parse_layers(value: Any) -> str:
    """``"7,8,9,10,11"`` (or a list of ints) -> the canonical string: distinct non-negative integers, sorted. Whether
    each names an attention layer is checked against the loaded UNet (:func:`check_layers`)."""
    items = value if isinstance(value, list | tuple) else str(value).replace(" ", "").split(",")
    try:
        layers = sorted({int(i) for i in items if str(i) != ""})
    except ValueError:
        raise ValueError(f"layers {value!r}: write comma-separated integers like 7,8,9,10,11") from None
    if not layers or layers[0] < 0:
        raise ValueError(f"layers {value!r}: give at least one layer index >= 0")
    return ",".join(map(str, layers))


def up_path_slots(unet: torch.nn.Module) -> list[torch.nn.Module | None]:
    """One entry per resnet of the up blocks, up-block-major: that slot's self-attention (``attn1`` of the first
    transformer block of the same position) or ``None`` where the block has no attention."""
    slots: list[torch.nn.Module | None] = []
    for block in unet.up_blocks:  # type: ignore[union-attr]
        attentions = getattr(block, "attentions", None)
        for j in range(len(block.resnets)):
            slots.append(attentions[j].transformer_blocks[0].attn1 if attentions is not None else None)
    return slots


def check_layers(layers: str, slots: list[torch.nn.Module | None]) -> frozenset[int]:
    """The selected slots, each required to hold a self-attention layer (one-line error otherwise)."""
    chosen = [int(i) for i in layers.split(",")]
    valid = [i for i, s in enumerate(slots) if s is not None]
    bad = [i for i in chosen if i not in valid]
    if not valid:
        raise EvalkitError(f"styleid: this UNet has no up-path self-attention layer ({len(slots)} slots, none)")
    if bad:
        raise EvalkitError(
            f"styleid layers {','.join(map(str, bad))} are not up-path self-attention layers of this UNet "
            f"(valid: {valid[0]}-{valid[-1]} of {len(slots)} slots)"
        )
    return frozenset(chosen)


class StyleID(MethodAdapter):
    name = "styleid"
    extra = "diffusion"
    kind = "artistic"
    version = "1"
    description = "Training-free style injection into Stable Diffusion's self-attention after DDIM inversion"
    citation = (
        "Chung, Hyun, Heo. Style Injection in Diffusion: A Training-free Approach for Adapting Large-scale Diffusion "
        "Models for Style Transfer. CVPR 2024"
    )
    weight_sets = WEIGHT_SETS
    deterministic = True  # DDIM with eta = 0 and the VAE posterior's mode: no random draw anywhere
    params = {
        "gamma": Param(
            0.75, "query preservation: weight of the content's query (1 = content layout only)", low=0, high=1
        ),
        "temperature": Param(1.5, "attention temperature T: logits scaled by T (> 0, at most 10)", low=1e-6, high=10),
        "layers": Param(
            "7,8,9,10,11",
            "up-path self-attention slots to inject (reference numbering, see module doc)",
            check=parse_layers,
        ),
        "ddim_steps": Param(20, "DDIM steps of the inversion and of the generation", low=1, high=1000),
        "init_adain": Param(True, "start from the AdaIN of the content's inverted latent to the style's"),
        "max_side": Param(768, "largest content side accepted (SD 2.1-base's native side is 512)", low=8, high=4096),
    }

    def load(self, files: dict[str, Path]) -> None:
        """Load the five components from a diffusers folder (a hub snapshot or a ``save_pretrained`` folder)."""
        self.parts = load_parts("styleid", files["pipeline"], self.device)
        self.unet, self.vae, self.scheduler = self.parts.unet, self.parts.vae, self.parts.scheduler
        self.text_encoder, self.tokenizer = self.parts.text_encoder, self.parts.tokenizer
        self.slots = up_path_slots(self.unet)
        self.state = S.InjectionState()
        for index, layer in enumerate(self.slots):
            if layer is not None:
                layer.set_processor(S.StyleInjectionProcessor(index, self.state))  # type: ignore[operator]
        self.factor = self.parts.factor
        with torch.no_grad():
            self.empty_prompt = self.parts.prompt("")

    def info(self) -> LoadedInfo:
        parts = self.parts.modules()
        modules = torch.nn.ModuleList(parts.values())
        return LoadedInfo(
            count_parameters(modules),
            count_layers(modules),
            {f"{k}_parameters": count_parameters(m) for k, m in parts.items()},
        )

    # -- the pieces of a run ----------------------------------------------------------------------------------------
    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """[0, 1] image -> scaled latent (posterior mode, as the reference: deterministic)."""
        return self.vae.encode(image * 2 - 1).latent_dist.mode() * self.vae.config.scaling_factor

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        return self.parts.decode(latent)

    def _eps(self, latent: torch.Tensor, t: int) -> torch.Tensor:
        self.state.timestep = t
        return self.unet(latent, t, encoder_hidden_states=self.empty_prompt).sample

    def invert(self, latent: torch.Tensor) -> torch.Tensor:
        """DDIM inversion to the last timestep (``set_timesteps`` done), recording as the state says."""
        kind = self.scheduler.config.prediction_type
        for t, alpha, alpha_next in S.inversion_schedule(self.scheduler):
            latent = S.ddim_inversion_step(latent, self._eps(latent, t), alpha, alpha_next, kind)
        return latent

    def generate(self, latent: torch.Tensor) -> torch.Tensor:
        """Deterministic DDIM sampling (eta = 0) from an inverted latent, injecting as the state says."""
        for t in self.scheduler.timesteps.tolist():
            latent = self.scheduler.step(self._eps(latent, int(t)), int(t), latent, eta=0.0).prev_sample
        return latent

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, masks: Masks | None = None, seed: int = 0, **params: Any
    ) -> torch.Tensor:
        p = self.resolve_params(params)
        layers = check_layers(p["layers"], self.slots)
        c_size, s_size = native_sizes("styleid", content, style, int(p["max_side"]), self.factor)
        self.scheduler.set_timesteps(int(p["ddim_steps"]))
        state = self.state
        state.layers, state.gamma, state.temperature = layers, float(p["gamma"]), float(p["temperature"])
        try:
            with torch.no_grad():
                state.mode, state.keep = "record", "kv"
                style_latent = self.invert(self.encode(resize(style, s_size)))
                state.keep = "q"
                content_latent = self.invert(self.encode(resize(content, c_size)))
                start = S.latent_adain(content_latent, style_latent) if p["init_adain"] else content_latent
                state.mode = "inject"
                out = self.decode(self.generate(start))
        finally:
            state.clear()
        return resize(out, tuple(content.shape[-2:])).clamp(0, 1)  # type: ignore[arg-type]
