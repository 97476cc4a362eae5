"""HyperDiffusion's denoiser: a transformer over one token per layer of the flattened MLP weights
(large layers cut into chunks), conditioned on the diffusion timestep."""

from __future__ import annotations

import itertools
import math

import torch
from torch import Tensor, nn

from ...space import WeightSpace
from ..diffusion import timestep_embedding


def segments(num_params: int, space: WeightSpace | None, chunk_size: int) -> Tensor:
    """Token layout ``LongTensor[T, 2]`` of (start, length): one token per tensor of ``space``, large
    tensors cut into near-equal chunks of at most ``chunk_size``; without a layout, chunks of the vector."""
    spans = [(space.slice(e.name).start, e.numel) for e in space.entries] if space is not None else [(0, num_params)]
    out = []
    for start, n in spans:
        k = math.ceil(n / chunk_size)
        bounds = [start + round(i * n / k) for i in range(k + 1)]
        out += [(a, b - a) for a, b in itertools.pairwise(bounds)]
    return torch.tensor(out, dtype=torch.long)


class LayerTransformer(nn.Module):
    """Denoiser over weight vectors: per-token linear embedding of each layer chunk, a timestep token,
    learned positions, a pre-norm transformer encoder, per-token linear read-out (as G.pt's, which
    HyperDiffusion uses)."""

    def __init__(self, segments: Tensor, d_model: int, n_layers: int, n_heads: int, dropout: float):
        super().__init__()
        starts, lengths = segments[:, 0], segments[:, 1]
        n_tok, width = len(segments), int(lengths.max())
        self.num_params = int(lengths.sum())
        pos = torch.arange(width)
        inside = pos[None] < lengths[:, None]
        # where each (token, slot) reads from; padding reads the appended zero at index num_params
        self.register_buffer("gather_index", torch.where(inside, starts[:, None] + pos, self.num_params), persistent=False)
        self.register_buffer("scatter_index", (torch.arange(n_tok)[:, None] * width + pos)[inside], persistent=False)
        self.d_model = d_model
        self.enc_w = nn.Parameter(torch.randn(n_tok, width, d_model) / lengths.float().sqrt()[:, None, None])
        self.enc_b = nn.Parameter(torch.zeros(n_tok, d_model))
        self.pos = nn.Parameter(torch.randn(n_tok + 1, d_model) * 0.02)
        self.time = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.dec_w = nn.Parameter(torch.randn(n_tok, d_model, width) / math.sqrt(d_model))
        self.dec_b = nn.Parameter(torch.zeros(n_tok, width))

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        padded = torch.cat([x, x.new_zeros(x.shape[0], 1)], 1)[:, self.gather_index]  # [B, T, C]
        h = torch.einsum("btc,tcd->btd", padded, self.enc_w) + self.enc_b
        temb = self.time(timestep_embedding(t, self.d_model))[:, None]
        h = self.norm(self.blocks(torch.cat([temb, h], 1) + self.pos))[:, 1:]
        out = torch.einsum("btd,tdc->btc", h, self.dec_w) + self.dec_b
        return out.flatten(1)[:, self.scatter_index]


