"""G.pt's denoiser: a transformer over per-layer chunks of the start parameters and the noised
target, plus three scalar tokens (start loss, target loss, diffusion timestep)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ...space import WeightSpace


def chunk_splits(space: WeightSpace, chunk_size: int) -> list[int]:
    """Token sizes: each tensor's flat values cut into chunks of ``chunk_size`` and a remainder, so
    no token mixes layers (G.pt's ``chunk_within_layer`` policy)."""
    splits = []
    for e in space.entries:
        full, rest = divmod(e.numel, chunk_size)
        splits += [chunk_size] * full + ([rest] if rest else [])
    return splits


class Tokens(nn.Module):
    """Per-token linear maps between parameter chunks (padded to one width) and ``d_model``."""

    def __init__(self, splits: Sequence[int]):
        super().__init__()
        width = max(splits)
        gather = torch.full((len(splits), width), sum(splits), dtype=torch.long)  # pads read a zero
        place = []
        start = 0
        for k, n in enumerate(splits):
            gather[k, :n] = torch.arange(start, start + n)
            place.append(torch.arange(n) + k * width)
            start += n
        self.register_buffer("gather", gather, persistent=False)
        self.register_buffer("place", torch.cat(place), persistent=False)

    def chunk(self, x: Tensor) -> Tensor:
        """``[B, P]`` → ``[B, T, width]``."""
        padded = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=1)
        return padded[:, self.gather]

    def unchunk(self, chunks: Tensor) -> Tensor:
        """``[B, T, width]`` → ``[B, P]``."""
        return chunks.flatten(1)[:, self.place]


class FrequencyEmbedder(nn.Module):
    """A scalar ``x`` → ``[sin(f x), cos(f x), x]`` over geometric frequencies (G.pt's scalar tokens)."""

    def __init__(self, num_frequencies: int, max_freq_log2: float):
        super().__init__()
        self.register_buffer("freqs", 2.0 ** torch.linspace(0, max_freq_log2, num_frequencies), persistent=False)

    @property
    def dim(self) -> int:
        return 2 * self.freqs.numel() + 1

    def forward(self, x: Tensor) -> Tensor:
        scaled = x[..., None] * self.freqs
        return torch.cat([scaled.sin(), scaled.cos(), x[..., None]], dim=-1)


class GptDenoiser(nn.Module):
    """``model(x_t, t, cond)`` for the diffusion core: ``x_t`` the noised normalised target
    parameters ``[B, P]``, ``cond = [θ_start (P), start loss, target loss]`` normalised → x0 ``[B, P]``.

    Sequence: 3 scalar tokens, the start parameters' tokens, the noised target's tokens, plus learned
    positions; a pre-norm transformer without masking; per-token linear decoders on the target
    tokens only, zero-initialised, so the untrained model predicts 0 (or θ_start with
    ``global_residual``: G.pt's ``θ' = θ + decoder(...)``).
    """

    def __init__(self, splits: Sequence[int], *, diffusion_steps: int, d_model: int, n_layers: int,
                 n_heads: int, num_frequencies: int, max_freq_log2: float, global_residual: bool):
        super().__init__()
        self.num_params = sum(splits)
        self.diffusion_steps = diffusion_steps
        self.global_residual = global_residual
        n_tok, width = len(splits), max(splits)
        self.tokens = Tokens(splits)
        self.scalars = FrequencyEmbedder(num_frequencies, max_freq_log2)
        self.embed_target = nn.Parameter(torch.randn(n_tok, width, d_model) * 0.02)
        self.embed_start = nn.Parameter(torch.randn(n_tok, width, d_model) * 0.02)
        self.embed_scalar = nn.Parameter(torch.randn(3, self.scalars.dim, d_model) * 0.02)
        self.ln_in = nn.LayerNorm(d_model)
        self.pos = nn.Parameter(torch.randn(1, 3 + 2 * n_tok, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.ln_out = nn.LayerNorm(d_model)
        self.unembed = nn.Parameter(torch.zeros(n_tok, d_model, width))

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        p = self.num_params
        start, losses = cond[:, :p], cond[:, p:]
        scalars = torch.cat([losses, (t.to(x_t.dtype) / self.diffusion_steps)[:, None]], dim=1)
        seq = torch.cat([
            torch.einsum("bkf,kfd->bkd", self.scalars(scalars), self.embed_scalar),
            torch.einsum("bkc,kcd->bkd", self.tokens.chunk(start), self.embed_start),
            torch.einsum("bkc,kcd->bkd", self.tokens.chunk(x_t), self.embed_target),
        ], dim=1)
        h = self.blocks(self.ln_in(seq) + self.pos)
        n_tok = self.unembed.shape[0]
        out = self.tokens.unchunk(torch.einsum("bkd,kdc->bkc", self.ln_out(h[:, -n_tok:]), self.unembed))
        return out + start if self.global_residual else out

