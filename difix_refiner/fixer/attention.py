"""Multi-view reference attention for the UNet (Difix's reference conditioning).

The target view and R reference views travel through the UNet as one batch of
``B * V`` images (V = 1 + R, target first). In every transformer block the
self-attention (``attn1``) regroups its tokens so that each target attends to the tokens of
all its views at once; cross-attention (``attn2``) and the feed-forward run per view as
usual. Nothing else changes, so the UNet's pretrained weights apply as they are and
V = 1 is plain single-view attention.

The view count reaches the processors through the UNet's ``cross_attention_kwargs``
(``{"num_views": V}``), which diffusers forwards to every attention processor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn


class MultiViewAttnProcessor:
    """Attention processor that can join self-attention across views.

    Args:
        joint: if True (use on ``attn1``), self-attention over ``num_views`` consecutive
            batch entries is computed jointly; if False (``attn2``) it behaves like diffusers'
            ``AttnProcessor2_0`` and only accepts ``num_views`` so diffusers does not warn.
    """

    def __init__(self, joint: bool) -> None:
        self.joint = joint

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_views: int = 1,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        spatial_shape = None
        if hidden_states.ndim == 4:
            # [N, C, H, W] -> [N, H*W, C]
            spatial_shape = hidden_states.shape
            n, c, h, w = spatial_shape
            hidden_states = hidden_states.view(n, c, h * w).transpose(1, 2)

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        # Regroup only for self-attention: cross-attention keys are the prompt, per view.
        join = self.joint and num_views > 1 and encoder_hidden_states is None
        n_views_batch, tokens, channels = hidden_states.shape
        if join:
            if n_views_batch % num_views != 0:
                raise ValueError(
                    f"batch of {n_views_batch} is not a multiple of num_views={num_views}"
                )
            if attention_mask is not None:
                raise ValueError("attention masks are not supported with joint multi-view attention")
            # [(B V), N, C] -> [B, (V N), C]: every view's queries see every view's keys.
            hidden_states = hidden_states.reshape(n_views_batch // num_views, num_views * tokens, channels)

        batch, seq_len, _ = hidden_states.shape
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            context = hidden_states
        else:
            context = encoder_hidden_states
            if attn.norm_cross:
                context = attn.norm_encoder_hidden_states(context)
        key = attn.to_k(context)
        value = attn.to_v(context)

        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, key.shape[1], batch)
            # [B*heads, 1, S] -> [B, heads, 1, S] as scaled_dot_product_attention expects
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])

        head_dim = key.shape[-1] // attn.heads
        # [B, S, heads*d] -> [B, heads, S, d]
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False, scale=attn.scale
        )
        # [B, heads, S, d] -> [B, S, heads*d]
        out = out.transpose(1, 2).reshape(batch, seq_len, attn.heads * head_dim).to(query.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)  # dropout

        if join:
            # [B, (V N), C'] -> [(B V), N, C']: back to one entry per view.
            out = out.reshape(n_views_batch, tokens, out.shape[-1])

        if spatial_shape is not None:
            out = out.transpose(1, 2).reshape(spatial_shape)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


def install_multiview_attention(unet: nn.Module) -> int:
    """Put :class:`MultiViewAttnProcessor` on every attention module of ``unet``.

    Self-attention layers (``attn1``) become joint across views; all others stay per view.
    Returns the number of joint (cross-view) layers, so callers can check that the
    architecture has any.
    """
    n_joint = 0
    for name, module in unet.named_modules():
        if isinstance(module, Attention):
            joint = name.rsplit(".", 1)[-1] == "attn1"
            module.set_processor(MultiViewAttnProcessor(joint=joint))
            n_joint += int(joint)
    return n_joint


def cross_view_attention_names(unet: nn.Module) -> list[str]:
    """Names of the self-attention modules that join views (for tests and training code)."""
    return [
        name
        for name, module in unet.named_modules()
        if isinstance(module, Attention) and name.rsplit(".", 1)[-1] == "attn1"
    ]
