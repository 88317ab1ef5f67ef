"""StyleID's pieces, one small function each, so each can be checked against its formula on random tensors.

StyleID (Chung, Hyun, Heo, CVPR 2024) changes a frozen Stable Diffusion in three places only:

- *Attention injection*: in chosen decoder self-attention layers, the keys and values are the style's (recorded while
  DDIM-inverting the style image at the same timestep) instead of the image's own.
- *Query preservation*: the query is ``gamma * q_content + (1 - gamma) * q_current``, ``q_content`` recorded while
  inverting the content image at the same timestep.
- *Attention temperature*: the logits are multiplied by ``T`` (> 1 sharpens the map, which the injection flattens):
  ``softmax(T * q k^T / sqrt(d)) v``. The original multiplies the blended query by ``T`` before diffusers' usual
  scaled scores, which is the same thing.

Plus *initial latent AdaIN* (the generation starts from the content's inverted latent with the channel mean/std of the
style's inverted latent) and deterministic DDIM inversion (eta = 0). The processor below is a diffusers attention
processor that records or injects by a shared :class:`InjectionState`; the adapter (``styleid.py``) drives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F

ADAIN_EPS = 1e-4  # added to the content latent's std, as the reference implementation does
Mode = Literal["off", "record", "inject"]
Keep = Literal["q", "kv"]


def blend_queries(q_content: torch.Tensor, q_current: torch.Tensor, gamma: float) -> torch.Tensor:
    """Query preservation: ``gamma`` of the content's query keeps its layout; the rest lets the image adapt."""
    return gamma * q_content + (1.0 - gamma) * q_current


def scaled_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``softmax(T * q k^T / sqrt(d)) v`` over ``(batch, heads, tokens, d)`` tensors; keys may have another token
    count than queries (the style's size need not be the content's). Fused kernel: the explicit map of a 64x64
    latent is 4096^2 per head."""
    scale = temperature / query.shape[-1] ** 0.5
    return F.scaled_dot_product_attention(query, key, value, scale=scale)


def latent_adain(content: torch.Tensor, style: torch.Tensor, eps: float = ADAIN_EPS) -> torch.Tensor:
    """The content latent with each channel's spatial mean/std replaced by the style latent's (unbiased std, ``eps``
    on the content's as in the reference): the generation starts from the style's colour statistics."""
    c_mean, c_std = content.mean(dim=(2, 3), keepdim=True), content.std(dim=(2, 3), keepdim=True)
    s_mean, s_std = style.mean(dim=(2, 3), keepdim=True), style.std(dim=(2, 3), keepdim=True)
    return (content - c_mean) / (c_std + eps) * s_std + s_mean


def split_prediction(
    sample: torch.Tensor, model_output: torch.Tensor, alpha: torch.Tensor | float, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted clean latent, predicted noise) from the UNet output at cumulative alpha ``alpha``: SD 1.x and
    2.1-base predict the noise, SD 2.1 (768) predicts v."""
    alpha = torch.as_tensor(alpha, dtype=sample.dtype, device=sample.device)
    a, s = alpha.sqrt(), (1 - alpha).sqrt()
    if prediction_type == "epsilon":
        return (sample - s * model_output) / a, model_output
    if prediction_type == "v_prediction":
        return a * sample - s * model_output, a * model_output + s * sample
    raise ValueError(f"prediction type {prediction_type!r} is not supported (epsilon or v_prediction)")


def ddim_inversion_step(
    sample: torch.Tensor,
    model_output: torch.Tensor,
    alpha: torch.Tensor | float,
    alpha_next: torch.Tensor | float,
    prediction_type: str = "epsilon",
) -> torch.Tensor:
    """One deterministic DDIM step *up* the noise schedule: ``x_next = sqrt(a_next) x0 + sqrt(1 - a_next) eps`` with
    ``x0``, ``eps`` predicted at the current alpha. It is the eta = 0 DDIM update solved for the noisier latent, so a
    generation step with the same prediction undoes it exactly."""
    x0, eps = split_prediction(sample, model_output, alpha, prediction_type)
    alpha_next = torch.as_tensor(alpha_next, dtype=sample.dtype, device=sample.device)
    return alpha_next.sqrt() * x0 + (1 - alpha_next).sqrt() * eps


def inversion_schedule(scheduler: Any) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(timestep, alpha_from, alpha_to)`` for each inversion step, in increasing noise: the exact reverse of the
    DDIM scheduler's generation steps (``set_timesteps`` must have been called). The step into timestep ``t`` starts
    from the alpha the generation step at ``t`` lands on (``final_alpha_cumprod`` below timestep 0, which is
    ``alphas_cumprod[0]`` for SD's ``set_alpha_to_one = false``, the reference's ``max(0, t - 1000 // steps)``)."""
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    steps = []
    for t in reversed(scheduler.timesteps.tolist()):
        prev = int(t) - stride
        alpha_from = scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        steps.append((int(t), alpha_from, scheduler.alphas_cumprod[int(t)]))
    return steps


@dataclass
class InjectionState:
    """What every StyleID processor reads: the mode, the current timestep and the recorded features.

    ``record`` keeps, per (layer, timestep), the query (``keep = "q"``, the content pass) or the keys and values
    (``keep = "kv"``, the style pass) of the layers in ``layers``; ``inject`` uses ``content_q`` and ``style_kv``."""

    layers: frozenset[int] = frozenset()
    mode: Mode = "off"
    keep: Keep = "q"
    timestep: int = -1
    gamma: float = 0.75
    temperature: float = 1.5
    content_q: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    style_kv: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def clear(self) -> None:
        self.content_q.clear()
        self.style_kv.clear()
        self.mode = "off"


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, heads * d) -> (batch, heads, tokens, d)."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


class StyleInjectionProcessor:
    """A diffusers attention processor for one up-path self-attention layer (``attn1``): plain attention unless its
    layer is selected and the state says record or inject. Follows diffusers' ``AttnProcessor`` for everything
    around the attention itself (group norm, residual, rescale), so unselected layers compute what they did."""

    def __init__(self, layer: int, state: InjectionState) -> None:
        self.layer = layer
        self.state = state

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("StyleID's processor is for self-attention without a mask (the UNet's attn1)")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        shape = hidden_states.shape
        if hidden_states.ndim == 4:
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q = _heads(attn.to_q(hidden_states), attn.heads)
        k = _heads(attn.to_k(hidden_states), attn.heads)
        v = _heads(attn.to_v(hidden_states), attn.heads)
        out = self._attend(q, k, v)
        out = out.transpose(1, 2).reshape(out.shape[0], -1, out.shape[1] * out.shape[3]).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if len(shape) == 4:
            out = out.transpose(-1, -2).reshape(shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        state, key = self.state, (self.layer, self.state.timestep)
        if self.layer not in state.layers or state.mode == "off":
            return scaled_attention(q, k, v)
        if state.mode == "record":
            if state.keep == "q":
                state.content_q[key] = q.detach()
            else:
                state.style_kv[key] = (k.detach(), v.detach())
            return scaled_attention(q, k, v)
        k_s, v_s = state.style_kv[key]
        return scaled_attention(blend_queries(state.content_q[key], q, state.gamma), k_s, v_s, state.temperature)
