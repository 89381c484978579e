"""Prompt encoding with the base's CLIP text encoder."""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def encode_prompt_clip(tokenizer: Any, text_encoder: Any, prompt: str) -> torch.Tensor:
    """Encode ``prompt`` to the UNet's cross-attention context, [1, L, D].

    Padded to the tokenizer's maximum length (77 for CLIP) like Stable Diffusion pipelines,
    and taken from the last hidden state, which is what SD 2.x / SD-Turbo were trained with.
    """
    ids = tokenizer(
        [prompt],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids  # [1, L]
    device = next(text_encoder.parameters()).device
    out = text_encoder(ids.to(device))
    hidden = out[0] if isinstance(out, (tuple, list)) else out.last_hidden_state
    return hidden.float().cpu()  # [1, L, D]
