"""Tiny randomly initialised Stable Diffusion components for the StyleID and InST tests (no download): a UNet with
one cross-attention block each way, a two-level VAE, a two-layer CLIP text model with a seven-token vocabulary
(``*`` included, InST's placeholder), a DDIM scheduler with SD's schedule, and a tiny CLIP image encoder with its
processor (InST's conditioning). Saved with ``save_pretrained``, so the adapters load them as they load a hub
snapshot; and method files that give the adapters a test-only weight set naming these folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# The tiny UNet's up path: UpBlock2D (no attention: slots 0, 1) then CrossAttnUpBlock2D (slots 2, 3).
TINY_LAYERS = "2,3"
VOCAB = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "b</w>": 3, "a": 4, "b": 5, "*</w>": 6}


def _tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    (folder / "vocab.json").write_text(json.dumps(VOCAB))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=8)


def build_tiny_sd(root: Path) -> Path:
    """Write the components under ``root`` (``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``, and
    ``clip`` for the image encoder) and return ``root``."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import (
        CLIPImageProcessor,
        CLIPTextConfig,
        CLIPTextModel,
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
    )

    (root / "tok_src").mkdir(parents=True)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32), norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16,
    )  # fmt: skip
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(VOCAB), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        )
    )  # fmt: skip
    sched = DDIMScheduler(
        num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
        clip_sample=False, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    image = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=32,
            patch_size=8, projection_dim=24,
        )
    )  # fmt: skip
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    parts: tuple[tuple[str, Any], ...] = (
        ("unet", unet), ("vae", vae), ("text_encoder", text), ("scheduler", sched),
        ("clip", image), ("clip", processor),
    )  # fmt: skip
    for name, part in parts:
        part.save_pretrained(root / name)
    _tokenizer(root / "tok_src").save_pretrained(root / "tokenizer")
    return root


TINY_METHODS = '''
"""StyleID and InST on tiny random diffusers components: test-only weight sets for the ordinary `evalkit run`."""
from dataclasses import dataclass, replace
from pathlib import Path

from evalkit_methods.inst import InST
from evalkit_methods.styleid import StyleID

from evalkit.weights import WeightSet

FOLDER = Path({folder!r})


@dataclass(frozen=True)
class TinyFolder(WeightSet):
    def resolve(self, store, download=True):
        return {{"pipeline": FOLDER, "clip": FOLDER / "clip"}}

    def availability(self, store):
        return "available", str(FOLDER)


TINY = {{"tiny": TinyFolder("tiny", {{}}, "tiny random diffusers components (tests only)")}}


class TinyStyleID(StyleID):
    name = "tinystyleid"
    weight_sets = TINY
    params = {{  # the tiny UNet's attention slots; styles scaled to 96 px keep the attention maps small
        **StyleID.params,
        "layers": replace(StyleID.params["layers"], default="2,3"),
        "max_side": replace(StyleID.params["max_side"], default=96),
    }}


class TinyInST(InST):
    name = "tinyinst"
    weight_sets = TINY
    params = {{  # a short fit at 32 px and a short schedule: the wiring, not the quality
        **InST.params,
        "fit_steps": replace(InST.params["fit_steps"], default=4),
        "fit_size": replace(InST.params["fit_size"], default=32),
        "ddim_steps": replace(InST.params["ddim_steps"], default=6),
        "max_side": replace(InST.params["max_side"], default=96),
    }}
'''


def write_tiny_methods(path: Path, folder: Path) -> Path:
    """The method file (``TinyStyleID``, ``TinyInST``) for components under ``folder``."""
    path.write_text(TINY_METHODS.format(folder=str(folder)))
    return path
