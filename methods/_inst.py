"""The pieces of InST (Zhang et al., CVPR 2023) that are not Stable Diffusion itself, each a small function or module
with the reference's formula, so the tests can check them one by one (methods/inst.py drives them).

- :class:`StyleMapper`: InST's ``Attentions`` module (``ldm/modules/embedding_manager.py``): two 8-head cross-
  attentions and a linear layer that map the style image's CLIP image embedding to the word embedding of the
  placeholder ``*``. Parameter names are the reference's (``attn1.to_q.weight`` ... ``net.1.bias``), so its
  ``state_dict`` and the reference's agree. On one token both attentions reduce to their value and output
  projections (a softmax over one key is 1); the module is kept whole so its parameters count as the paper's.
- :func:`reference_cast`: what the reference's CLIP image encoder is actually shown. Its conditioning casts the
  image tensor in [-1, 1] to ``uint8`` (``input_img[0].permute(1, 2, 0).numpy().astype(np.uint8)``), which keeps 255
  where a channel was 0, 1 where it was 255 and 0 elsewhere; evalkit reproduces that by default
  (``clip_input = "reference-cast"``) and offers the image itself (``"image"``).
- :func:`adain`, :func:`q_sample`, :func:`stochastic_inversion`: the inference notebook's latent AdaIN (variance
  plus 1e-5, unbiased), forward noising, and "stochastic inversion" (the noise in the forward formula replaced by
  the UNet's prediction at that step).
- :func:`placeholder_embedding`: the placeholder token's embedding replaced in the text encoder's input.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

PLACEHOLDER = "*"  # the reference's placeholder string
ADAIN_EPS = 1e-5  # added to the variance, as InST's calc_mean_std


class CrossAttention(nn.Module):
    """LDM's cross-attention (``ldm/modules/attention.py``): ``heads`` x ``dim_head``, bias-free projections, an
    output projection followed by dropout; self-attention when ``context`` is omitted."""

    def __init__(self, query_dim: int, heads: int = 8, dim_head: int = 64, dropout: float = 0.0) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(query_dim, inner, bias=False)
        self.to_v = nn.Linear(query_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, _ = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = heads(self.to_q(x)), heads(self.to_k(context)), heads(self.to_v(context))
        attention = (q @ k.transpose(-1, -2) * self.scale).softmax(dim=-1)
        return self.to_out((attention @ v).transpose(1, 2).reshape(b, n, -1))


class StyleMapper(nn.Module):
    """InST's ``Attentions``: CLIP image embedding ``(b, 1, image_dim)`` -> placeholder embedding ``(b, 1,
    token_dim)``. The reference has ``image_dim == token_dim == 768`` (SD 1.x with CLIP ViT-L/14); the final linear
    layer maps to ``token_dim`` so other pairings work the same way."""

    def __init__(self, image_dim: int, token_dim: int, dropout: float = 0.05) -> None:
        super().__init__()
        self.attn1 = CrossAttention(image_dim, heads=8, dim_head=64, dropout=dropout)
        self.attn2 = CrossAttention(image_dim, heads=8, dim_head=64, dropout=dropout)
        self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(image_dim, token_dim))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        return self.net(self.attn2(self.attn1(image_embeds), image_embeds))


def reference_cast(image_u8: torch.Tensor) -> torch.Tensor:
    """The uint8 image the reference's CLIP encoder sees for an image with bytes ``image_u8``: numpy's cast of
    ``v / 127.5 - 1`` to uint8 truncates toward zero and wraps -1 to 255."""
    out = torch.zeros_like(image_u8)
    out[image_u8 == 0] = 255
    out[image_u8 == 255] = 1
    return out


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = ADAIN_EPS) -> torch.Tensor:
    """Per-channel AdaIN of latents as the reference's notebook: ``std = sqrt(var_unbiased + eps)``."""

    def moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(2)
        return flat.mean(-1)[..., None, None], (flat.var(-1) + eps).sqrt()[..., None, None]

    c_mean, c_std = moments(content)
    s_mean, s_std = moments(style)
    return (content - c_mean) / c_std * s_std + s_mean


def q_sample(x0: torch.Tensor, noise: torch.Tensor, alpha_cumprod: torch.Tensor) -> torch.Tensor:
    """Forward diffusion to a step with cumulative alpha ``alpha_cumprod``."""
    return alpha_cumprod.sqrt() * x0 + (1 - alpha_cumprod).sqrt() * noise


def stochastic_inversion(x0: torch.Tensor, predicted: torch.Tensor, alpha_cumprod: torch.Tensor) -> torch.Tensor:
    """InST's start latent: :func:`q_sample` with the UNet's noise prediction (at the noised latent) as the noise."""
    return q_sample(x0, predicted, alpha_cumprod)


@contextmanager
def placeholder_embedding(text_encoder: nn.Module, token_id: int, vector: torch.Tensor) -> Iterator[None]:
    """Inside the block, every ``token_id`` in the text encoder's input embeds as ``vector`` (``(1, dim)``; gradients
    flow to it), as the reference's EmbeddingManager replaces the placeholder's row."""
    embedding = text_encoder.get_input_embeddings()  # type: ignore[operator]

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
        mask = (inputs[0] == token_id).unsqueeze(-1)
        return torch.where(mask, vector.to(output.dtype)[:, None, :], output)

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def noise_loss(predicted: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """LDM's ``loss_simple`` with the reference's settings (logvar 0, no VLB term): the mean squared error."""
    return F.mse_loss(predicted, noise)
