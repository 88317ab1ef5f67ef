"""Zhang, Huang, Tang, Ma, Huang, Dong, Xu, "Inversion-Based Style Transfer with Diffusion Models", CVPR 2023 (InST),
on Stable Diffusion through ``diffusers``.

Written from the paper and the authors' code (zyxElsa/InST: ``ldm/modules/embedding_manager.py``, the
``v1-finetune.yaml`` training configuration and the ``InST.ipynb`` inference notebook). Two phases:

1. **Fit, once per style image** (:meth:`InST.fit_style`, timed by the harness as the speed table's ``fit/style``
   column and kept on disk by :mod:`evalkit.fits`): textual inversion through InST's attention-based mapper
   (:class:`~evalkit_methods._inst.StyleMapper`) from the style's CLIP image embedding to the word embedding of the
   placeholder ``*``. Every step (as the reference trains): the style resized to ``fit_size`` squared (bicubic), flipped
   horizontally with probability 0.5, a VAE posterior *sample*, a uniform timestep of the 1000, Gaussian noise; the
   loss is the mean squared error of the UNet's noise prediction conditioned on the prompt ``*``; AdamW (lr
   ``fit_lr``, 1e-4 as the reference's scaled rate for one GPU and batch 1) updates the mapper only, ``fit_steps``
   times (6100, the reference's ``max_steps``). Randomness comes from ``fit_seed`` alone, so one fit serves every
   content and seed. Kept: the mapper's parameters and the embedding it gives the style in evaluation mode.
2. **Stylize** (:meth:`InST.stylize`, stochastic: the seed matters): VAE posterior samples of content and style, the
   content latent AdaIN'ed to the style's (``init_adain``), noised to ``t = int(strength * 1000)``, then "stochastic
   inversion" (the noise replaced by the UNet's prediction there), then ``int(strength * ddim_steps)`` DDIM steps
   (eta 0) with classifier-free guidance ``guidance_scale`` (10) between the prompt ``*`` and the empty prompt, and the
   VAE decoder. Defaults are the notebook's: strength 0.7, 50 DDIM steps.

Differences from the reference, on purpose: the content is processed at its own size rounded to a multiple of 8 (the
reference resizes content and style to 512x512), refused above ``max_side``; ``strength = 1`` noises to step 999
(the reference would index past its schedule). What the CLIP image encoder sees is the reference's by default
(``clip_input``; see :func:`~evalkit_methods._inst.reference_cast`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from evalkit_methods import _inst as I
from evalkit_methods._diffusion import (
    INSTALL_HINT,
    HubWeightSet,
    first_line,
    load_parts,
    native_sizes,
    resize,
)
from PIL import Image

from evalkit.adapter import LoadedInfo, Masks, MethodAdapter, Param, count_layers, count_parameters
from evalkit.errors import EvalkitError, WeightsUnavailable
from evalkit.weights import WeightSet

WEIGHT_SETS: dict[str, WeightSet] = {
    "sd14": HubWeightSet(
        "sd14",
        description="Stable Diffusion 1.4 (CompVis/stable-diffusion-v1-4) with CLIP ViT-L/14's image encoder "
        "(openai/clip-vit-large-patch14), the paper's models, from the Hugging Face cache",
        official=True,
        model_id="CompVis/stable-diffusion-v1-4",
        extra=(("clip", "openai/clip-vit-large-patch14"),),
    ),
}


class InST(MethodAdapter):
    name = "inst"
    extra = "diffusion"
    kind = "artistic"
    version = "1"
    description = "Textual inversion of the style into a word embedding of Stable Diffusion, then img2img sampling"
    citation = (
        "Zhang, Huang, Tang, Ma, Huang, Dong, Xu. Inversion-Based Style Transfer with Diffusion Models. CVPR 2023"
    )
    weight_sets = WEIGHT_SETS
    deterministic = False  # VAE posterior samples and the forward noise depend on the seed
    fit_params = ("fit_steps", "fit_lr", "fit_size", "fit_seed", "clip_input")
    params = {
        "strength": Param(0.7, "how far the content is noised (share of 1000 steps and of ddim_steps)", low=0, high=1),
        "ddim_steps": Param(50, "DDIM steps of the schedule (strength x ddim_steps of them run)", low=1, high=1000),
        "guidance_scale": Param(10.0, "classifier-free guidance: prompt * against the empty prompt", low=0, high=50),
        "init_adain": Param(True, "start from the AdaIN of the content latent to the style latent"),
        "max_side": Param(768, "largest content side accepted (SD 1.4's native side is 512)", low=8, high=4096),
        "fit_steps": Param(6100, "textual-inversion steps, once per style (reference: max_steps)", low=1, high=100_000),
        "fit_lr": Param(1e-4, "AdamW learning rate of the style mapper", low=1e-8, high=1.0),
        "fit_size": Param(512, "side of the square the style is resized to for the fit", low=8, high=1024),
        "fit_seed": Param(0, "seed of the fit (mapper init, dropout, flips, noise, timesteps)", low=0, high=2**31 - 1),
        "clip_input": Param(
            "reference-cast",
            "what CLIP sees: the reference's uint8 cast of the [-1, 1] image, or the image itself",
            choices=("reference-cast", "image"),
        ),
    }  # fmt: skip

    # -- loading ------------------------------------------------------------------------------------------------------
    def load(self, files: dict[str, Path]) -> None:
        """SD's components from ``pipeline``; CLIP's image encoder with projection and its processor from ``clip``."""
        self.parts = load_parts("inst", files["pipeline"], self.device)
        try:
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection
        except ImportError as exc:
            raise WeightsUnavailable(f"inst needs transformers: {INSTALL_HINT}") from exc
        try:
            encoder: Any = CLIPVisionModelWithProjection.from_pretrained(files["clip"])
            self.processor = CLIPImageProcessor.from_pretrained(files["clip"])
        except (OSError, ValueError) as exc:
            raise WeightsUnavailable(
                f"inst: {files['clip']} is not a CLIP image model folder: {first_line(exc)}"
            ) from exc
        self.image_encoder = encoder.to(self.device).eval().requires_grad_(False)
        ids = self.parts.tokenizer(I.PLACEHOLDER).input_ids
        self.placeholder_id = int(ids[1])  # the reference's get_clip_token_for_string: the token after BOS
        self.image_dim = int(self.image_encoder.config.projection_dim)
        self.token_dim = int(self.parts.text_encoder.get_input_embeddings().embedding_dim)
        with torch.no_grad():
            self.empty_prompt = self.parts.prompt("")

    def info(self) -> LoadedInfo:
        parts = {**self.parts.modules(), "image_encoder": self.image_encoder}
        modules = torch.nn.ModuleList(parts.values())
        mapper = count_parameters(I.StyleMapper(self.image_dim, self.token_dim))
        return LoadedInfo(
            count_parameters(modules),
            count_layers(modules),
            {**{f"{k}_parameters": count_parameters(m) for k, m in parts.items()}, "mapper_parameters": mapper},
        )

    # -- pieces -------------------------------------------------------------------------------------------------------
    def clip_embedding(self, image: torch.Tensor, clip_input: str) -> torch.Tensor:
        """The normalised CLIP image embedding ``(1, image_dim)`` the reference conditions on (CLIPModel's
        ``image_embeds`` are divided by their norm) of a [0, 1] image, through CLIP's own processor."""
        u8 = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8)
        if clip_input == "reference-cast":
            u8 = I.reference_cast(u8)
        pil = Image.fromarray(np.ascontiguousarray(u8[0].permute(1, 2, 0).cpu().numpy()))
        pixels = self.processor(images=pil, return_tensors="pt").pixel_values.to(self.device)
        with torch.no_grad():
            embeds = self.image_encoder(pixel_values=pixels).image_embeds
        return embeds / embeds.norm(dim=-1, keepdim=True)

    def prompt_with(self, embedding: torch.Tensor) -> torch.Tensor:
        """Text-encoder states of the prompt ``*`` with the placeholder embedded as ``embedding`` (``(1, dim)``)."""
        with I.placeholder_embedding(self.parts.text_encoder, self.placeholder_id, embedding):
            return self.parts.prompt(I.PLACEHOLDER)

    def latent_dist(self, image: torch.Tensor) -> Any:
        return self.parts.vae.encode(image * 2 - 1).latent_dist

    def inversion_loss(
        self, embedding: torch.Tensor, latent: torch.Tensor, t: int, noise: torch.Tensor
    ) -> torch.Tensor:
        """The fit's loss for one (latent, timestep, noise): the UNet's noise prediction error under prompt ``*``."""
        alpha = self.parts.scheduler.alphas_cumprod[t].to(self.device)
        noised = I.q_sample(latent, noise, alpha)
        predicted = self.parts.unet(noised, t, encoder_hidden_states=self.prompt_with(embedding)).sample
        return I.noise_loss(predicted, noise)

    # -- phase 1: once per style --------------------------------------------------------------------------------------
    def fit_style(self, style: torch.Tensor, **params: Any) -> dict[str, torch.Tensor]:
        p = self.resolve_params(params)
        size = int(p["fit_size"])
        square = F.interpolate(style.float(), size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        views = [square.clamp(0, 1), square.clamp(0, 1).flip(-1)]  # RandomHorizontalFlip(p=0.5) picks one
        embeds = [self.clip_embedding(v, str(p["clip_input"])) for v in views]
        with torch.no_grad():
            posteriors = [self.latent_dist(v) for v in views]
        scale = float(self.parts.vae.config.scaling_factor)
        steps_total = int(self.parts.scheduler.config.num_train_timesteps)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(p["fit_seed"]))  # mapper initialisation and dropout
            gen = torch.Generator(device=self.device).manual_seed(int(p["fit_seed"]))
            mapper = I.StyleMapper(self.image_dim, self.token_dim).to(self.device).train()
            optimiser = torch.optim.AdamW(mapper.parameters(), lr=float(p["fit_lr"]))
            losses = []
            for _ in range(int(p["fit_steps"])):
                view = int(torch.rand((), generator=gen, device=self.device) < 0.5)
                with torch.no_grad():
                    latent = posteriors[view].sample(generator=gen) * scale
                t = int(torch.randint(0, steps_total, (), generator=gen, device=self.device))
                noise = torch.randn(latent.shape, generator=gen, device=self.device)
                loss = self.inversion_loss(mapper(embeds[view][:, None])[:, 0], latent, t, noise)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                losses.append(float(loss.detach()))
            mapper.eval()
            with torch.no_grad():
                embedding = mapper(embeds[0][:, None])[:, 0]
        return {
            "embedding": embedding,
            "losses": torch.tensor(losses),
            **{f"mapper.{k}": v.detach() for k, v in mapper.state_dict().items()},
        }

    # -- phase 2: every job -------------------------------------------------------------------------------------------
    def stylize(
        self,
        content: torch.Tensor,
        style: torch.Tensor,
        masks: Masks | None = None,
        seed: int = 0,
        fitted: dict[str, torch.Tensor] | None = None,
        **params: Any,
    ) -> torch.Tensor:
        if fitted is None:
            raise EvalkitError(
                "inst: no style embedding; the harness runs fit_style first (call it yourself outside it)"
            )
        p = self.resolve_params(params)
        parts = self.parts
        c_size, s_size = native_sizes("inst", content, style, int(p["max_side"]), parts.factor)
        gen = torch.Generator(device=self.device).manual_seed(int(seed))
        scale = float(parts.vae.config.scaling_factor)
        with torch.no_grad():
            content_latent = self.latent_dist(resize(content, c_size)).sample(generator=gen) * scale
            style_latent = self.latent_dist(resize(style, s_size)).sample(generator=gen) * scale
            start = I.adain(content_latent, style_latent) if p["init_adain"] else content_latent
            cond = self.prompt_with(fitted["embedding"].to(self.device))
            t_enc = min(int(float(p["strength"]) * 1000), int(parts.scheduler.config.num_train_timesteps) - 1)
            alpha = parts.scheduler.alphas_cumprod[t_enc].to(self.device)
            noise = torch.randn(start.shape, generator=gen, device=self.device)
            predicted = parts.unet(I.q_sample(start, noise, alpha), t_enc, encoder_hidden_states=cond).sample
            latent = I.stochastic_inversion(start, predicted, alpha)
            parts.scheduler.set_timesteps(int(p["ddim_steps"]))
            steps = int(float(p["strength"]) * int(p["ddim_steps"]))
            timesteps = parts.scheduler.timesteps.tolist()
            both = torch.cat([cond, self.empty_prompt])
            for t in timesteps[len(timesteps) - steps :]:
                e_cond, e_uncond = parts.unet(
                    torch.cat([latent, latent]), int(t), encoder_hidden_states=both
                ).sample.chunk(2)
                guided = e_uncond + float(p["guidance_scale"]) * (e_cond - e_uncond)
                latent = parts.scheduler.step(guided, int(t), latent, eta=0.0).prev_sample
            out = parts.decode(latent)
        return resize(out, tuple(content.shape[-2:])).clamp(0, 1)  # type: ignore[arg-type]
