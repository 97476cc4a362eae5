"""Hyper-Representations' networks: neuron tokens (:class:`Tokenizer`) and the transformer autoencoder
over them, with the NT-Xent contrastive loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import LayoutError
from ...space import WeightSpace


class Tokenizer:
    """One token per output neuron of every layer, in layout order.

    A layer is a tensor of two or more dimensions (``[out, in, ...]``); its neuron i owns row i of
    it and entry i of every 1-D tensor of size ``out`` with the same name prefix (the bias) or
    permuted with it by the same neuron group (BatchNorm parameters and statistics). Token i is
    those values concatenated, zero-padded to ``width``. Every coordinate sits in exactly one
    token, so ``detokenize(tokenize(w)) == w`` exactly.
    """

    def __init__(self, space: WeightSpace):
        self.space = space
        owner: dict[str, str] = {}
        layers = []
        for e in space.entries:
            if len(e.shape) < 2:
                continue
            prefix, n_out = e.name.rpartition(".")[0], e.shape[0]
            group = next((g for g in space.groups if (e.name, 0) in g.axes), None)
            members = [e.name]
            for f in space.entries:
                if len(f.shape) != 1 or f.shape[0] != n_out or f.name in owner:
                    continue
                if f.name.rpartition(".")[0] == prefix or (group is not None and (f.name, 0) in group.axes):
                    members.append(f.name)
                    owner[f.name] = e.name
            owner[e.name] = e.name
            layers.append((e.name, tuple(members)))
        left = [e.name for e in space.entries if e.name not in owner]
        if not layers or left:
            raise LayoutError(f"layout '{space.name}': cannot tokenise {left or 'it'}: every tensor must be a "
                              "layer weight [out, in, ...] or a 1-D tensor of one of those layers' neurons")
        index = torch.arange(space.num_params)
        pieces = space.unflatten(index, cast=False)
        rows = [torch.cat([pieces[m].reshape(pieces[name].shape[0], -1) for m in members], dim=1)
                for name, members in layers]
        self.layers = tuple(name for name, _ in layers)
        self.width = max(r.shape[1] for r in rows)
        self.index = torch.cat([F.pad(r, (0, self.width - r.shape[1]), value=space.num_params) for r in rows])
        self.valid = self.index < space.num_params  # [T, D]
        self.layer_of_token = torch.cat([torch.full((r.shape[0],), i) for i, r in enumerate(rows)])
        self.layer_of_coordinate = torch.empty(space.num_params, dtype=torch.long)
        for i, r in enumerate(rows):
            self.layer_of_coordinate[r.reshape(-1)] = i
        flat = self.index.reshape(-1)
        self.inverse = torch.empty(space.num_params, dtype=torch.long)
        self.inverse[flat[flat < space.num_params]] = torch.nonzero(flat < space.num_params).reshape(-1)

    @property
    def num_tokens(self) -> int:
        return self.index.shape[0]

    def tokenize(self, weights: Tensor) -> Tensor:
        """``Tensor[..., P]`` → ``Tensor[..., T, width]`` (padding is 0)."""
        if weights.shape[-1] != self.space.num_params:
            raise LayoutError(f"weights: expected {self.space.num_params} parameters for layout "
                              f"'{self.space.name}', got {weights.shape[-1]}")
        padded = torch.cat([weights, weights.new_zeros(*weights.shape[:-1], 1)], dim=-1)
        return padded[..., self.index.to(weights.device)]

    def detokenize(self, tokens: Tensor) -> Tensor:
        """``Tensor[..., T, width]`` → ``Tensor[..., P]`` (padding is dropped)."""
        if tuple(tokens.shape[-2:]) != tuple(self.index.shape):
            raise LayoutError(f"tokens: expected [..., {self.num_tokens}, {self.width}], got {tuple(tokens.shape)}")
        flat = tokens.reshape(*tokens.shape[:-2], -1)
        return flat[..., self.inverse.to(tokens.device)]


# ----------------------------------------------------------------------------- autoencoder


def _transformer(d_model: int, heads: int, layers: int, ff: int, dropout: float) -> nn.TransformerEncoder:
    # Pre-norm blocks and no final norm: the residual stream keeps each token's scale, so the
    # linear neck can pass weights straight through while the attention layers learn corrections.
    layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class LayerLinear(nn.Module):
    """A linear map per token whose weights are shared by the tokens of one layer (the original
    embeds each layer's neurons with that layer's own linear map): ``[B, T, in]`` → ``[B, T, out]``."""

    def __init__(self, layer_of_token: Tensor, d_in: int, d_out: int):
        super().__init__()
        n = int(layer_of_token.max()) + 1
        bound = 1.0 / math.sqrt(d_in)
        self.weight = nn.Parameter(torch.empty(n, d_in, d_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, d_out).uniform_(-bound, bound))
        self.register_buffer("layer", layer_of_token.clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bti,tio->bto", x, self.weight[self.layer]) + self.bias[self.layer]


class HyperAutoEncoder(nn.Module):
    """tokens ``[B, T, D]`` → per-layer embedding + learned position embedding → transformer →
    flatten → linear neck → latent ``[B, latent]`` → linear → ``[B, T, d_model]`` + position
    embedding → transformer → per-layer linear head → tokens (the original's "linear" compression),
    plus a projection head for the contrastive loss (SimCLR-style, used in training only)."""

    def __init__(self, layer_of_token: Tensor, width: int, d_model: int = 64, heads: int = 4, layers: int = 2,
                 ff: int = 128, latent: int = 256, projection: int = 64, dropout: float = 0.0):
        super().__init__()
        self.num_tokens, self.d_model = len(layer_of_token), d_model
        self.embed = LayerLinear(layer_of_token, width, d_model)
        self.pos_enc = nn.Parameter(torch.randn(self.num_tokens, d_model) * 0.02)
        self.encoder = _transformer(d_model, heads, layers, ff, dropout)
        self.to_latent = nn.Linear(self.num_tokens * d_model, latent)
        self.from_latent = nn.Linear(latent, self.num_tokens * d_model)
        self.pos_dec = nn.Parameter(torch.randn(self.num_tokens, d_model) * 0.02)
        self.decoder = _transformer(d_model, heads, layers, ff, dropout)
        self.head = LayerLinear(layer_of_token, d_model, width)
        self.project = nn.Sequential(nn.Linear(latent, projection), nn.ReLU(), nn.Linear(projection, projection))

    def encode(self, tokens: Tensor) -> Tensor:
        return self.to_latent(self.encoder(self.embed(tokens) + self.pos_enc).flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        h = self.from_latent(z).reshape(z.shape[0], self.num_tokens, self.d_model) + self.pos_dec
        return self.head(self.decoder(h))


def nt_xent(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """NT-Xent (SimCLR): row i of ``a`` and row i of ``b`` are positives, all other rows negatives."""
    z = F.normalize(torch.cat([a, b]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(len(z), dtype=torch.bool, device=z.device), float("-inf"))
    n = a.shape[0]
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(sim, target)


