"""P-diff's networks: a 1-D convolutional autoencoder over a parameter vector and an MLP denoiser
over its latents."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..diffusion import timestep_embedding


class ConvAutoencoder(nn.Module):
    """1-D convolutional autoencoder over a parameter vector, as in P-diff: each level folds the
    length by ``fold`` with a strided convolution; a tanh-bounded latent ``[latent_channels,
    length / fold**levels]``; the decoder mirrors it with transposed convolutions. The vector is
    zero-padded to a multiple of ``fold**levels``. (No InstanceNorm, unlike the original: it would
    discard each vector's own scale, which the decoder has to reproduce.)"""

    def __init__(self, length: int, channels: tuple[int, ...], latent_channels: int, fold: int, kernel_size: int):
        super().__init__()
        self.length = length
        unit = fold ** len(channels)
        self.padded = math.ceil(length / unit) * unit
        self.latent_shape = (latent_channels, self.padded // unit)
        pad = kernel_size // 2
        enc: list[nn.Module] = [nn.Conv1d(1, channels[0], kernel_size, padding=pad)]
        prev = channels[0]
        for c in channels:
            enc += [nn.LeakyReLU(), nn.Conv1d(prev, c, fold, stride=fold), nn.LeakyReLU(),
                    nn.Conv1d(c, c, kernel_size, padding=pad)]
            prev = c
        enc += [nn.LeakyReLU(), nn.Conv1d(prev, latent_channels, 1), nn.Tanh()]
        dec: list[nn.Module] = [nn.Conv1d(latent_channels, channels[-1], 1)]
        rev = list(reversed(channels))
        for c, nxt in zip(rev, [*rev[1:], channels[0]], strict=True):
            dec += [nn.LeakyReLU(), nn.ConvTranspose1d(c, nxt, fold, stride=fold), nn.LeakyReLU(),
                    nn.Conv1d(nxt, nxt, kernel_size, padding=pad)]
        dec += [nn.LeakyReLU(), nn.Conv1d(channels[0], 1, kernel_size, padding=pad)]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    @property
    def latent_dim(self) -> int:
        return self.latent_shape[0] * self.latent_shape[1]

    def encode(self, x: Tensor) -> Tensor:
        """``[B, length] -> [B, latent_dim]``"""
        x = nn.functional.pad(x, (0, self.padded - self.length))
        return self.encoder(x[:, None, :]).flatten(1)

    def decode(self, z: Tensor) -> Tensor:
        """``[B, latent_dim] -> [B, length]``"""
        return self.decoder(z.view(-1, *self.latent_shape))[:, 0, : self.length]


class LatentDenoiser(nn.Module):
    """An MLP denoiser over flat latents with a sinusoidal timestep embedding (unconditional)."""

    def __init__(self, dim: int, width: int, depth: int, emb: int = 64):
        super().__init__()
        self.emb = emb
        layers: list[nn.Module] = [nn.Linear(dim + emb, width), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), nn.SiLU()]
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.net(torch.cat([x, timestep_embedding(t, self.emb)], dim=-1))


def blend_noise(x: Tensor, factor: float, generator: torch.Generator) -> Tensor:
    """P-diff's augmentation: ``(1 - factor) x + factor N(0, I)``."""
    noise = torch.randn(x.shape, generator=generator).to(x)
    return (1.0 - factor) * x + factor * noise

