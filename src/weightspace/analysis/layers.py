"""Which tensors of a state dict are weight matrices, and how each becomes a stack of matrices.

Every tensor carries a leading model axis ``B`` (one model: ``B = 1``; a zoo: ``B = N``), so a layer of
a whole zoo is one ``[B, S, rows, cols]`` stack (``S`` slices: conv kernel positions, gates, q/k/v).
Conventions follow WeightWatcher where it has one: Conv2d ``(out, in, kh, kw)`` gives one ``out x in``
matrix per kernel position, pooled into one spectrum; Linear and Embedding are one matrix each.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

_NORM_NAME = re.compile(r"norm|(^|\.)(ln|bn)(_?\w*)?\.", re.IGNORECASE)
_RNN_NAME = re.compile(r"^(?P<prefix>.*)weight_(?P<kind>ih|hh)_l(?P<layer>\d+)(?P<suffix>(_reverse)?)$")
_FUSED_QKV = re.compile(r"(in_proj_weight$|qkv|c_attn\.weight$|query_key_value)", re.IGNORECASE)
_EMBED_NAME = re.compile(r"embed|(^|[._])(emb|wte|wpe)([._]|$)", re.IGNORECASE)

CONV_MODES = ("pool", "slices", "flatten")


@dataclass(frozen=True)
class LayerMatrices:
    """One layer (or one gate / projection of a fused tensor) as a stack of matrices, or why not."""

    name: str
    kind: str  # dense | embedding | conv1d | conv2d | attention | rnn | skipped
    mats: Tensor | None  # [B, S, rows, cols], rows >= cols; None when skipped
    reason: str = ""  # why it was skipped

    @property
    def N(self) -> int:
        return int(self.mats.shape[-2])

    @property
    def M(self) -> int:
        return int(self.mats.shape[-1])

    @property
    def rf(self) -> int:
        return int(self.mats.shape[1])


def layer_matrices(batched: Mapping[str, Tensor], *, conv: str = "pool", split_fused: bool = True,
                   context: Mapping[str, Tensor] | None = None) -> list[LayerMatrices]:
    """The analysable matrices of a batched state dict ``{name: Tensor[B, *shape]}``, in its order.

    Skipped tensors (norm layers, vectors, non-float buffers, shapes of more than 4 axes) come back
    with ``kind="skipped"`` and a reason, so that a report can say what was left out. ``context``: the
    whole model's tensors (shapes suffice: ``meta`` tensors), where ``batched`` is a part of it — an
    LSTM's gates are split by the size of its hidden-to-hidden weight.
    """
    if conv not in CONV_MODES:
        from ..errors import ConfigError

        raise ConfigError(f"conv={conv!r}: expected one of {', '.join(CONV_MODES)}")
    out: list[LayerMatrices] = []
    for name, t in batched.items():
        shape = tuple(t.shape[1:])
        if not (t.is_floating_point() or t.is_complex()):
            out.append(LayerMatrices(name, "skipped", None, f"not a float tensor ({t.dtype})"))
        elif len(shape) < 2:
            why = "normalisation parameter" if _NORM_NAME.search(name) else "vector or scalar (bias, buffer)"
            out.append(LayerMatrices(name, "skipped", None, why))
        elif _NORM_NAME.search(name):
            out.append(LayerMatrices(name, "skipped", None, "normalisation layer"))
        elif len(shape) == 2:
            out.extend(_matrix_layers(name, t, batched if context is None else context, split_fused))
        elif len(shape) in (3, 4):
            layer = _conv_layer(name, t, "pool" if conv == "slices" else conv)
            if conv == "slices":  # WeightWatcher's pool=False: every kernel position its own matrix
                out.extend(LayerMatrices(f"{name}[{s}]", layer.kind, layer.mats[:, s:s + 1]) for s in range(layer.rf))
            else:
                out.append(layer)
        else:
            out.append(LayerMatrices(name, "skipped", None, f"{len(shape)}-axis tensor {shape}: no matrix convention"))
    return out


def _tall(m: Tensor) -> Tensor:
    return m.transpose(-1, -2) if m.shape[-2] < m.shape[-1] else m


def _matrix_layers(name: str, t: Tensor, batched: Mapping[str, Tensor], split_fused: bool) -> list[LayerMatrices]:
    rnn = _RNN_NAME.match(name)
    if rnn:
        hh = batched.get(f"{rnn['prefix']}weight_hh_l{rnn['layer']}{rnn['suffix']}")
        hidden = int(hh.shape[-1]) if hh is not None else 0
        gates = t.shape[1] // hidden if hidden and t.shape[1] % hidden == 0 else 0
        if gates > 1:
            chunks = t.chunk(gates, dim=1)  # torch.nn.LSTM: i, f, g, o; GRU: r, z, n
            return [LayerMatrices(f"{name}[gate{g}]", "rnn", _tall(c).unsqueeze(1)) for g, c in enumerate(chunks)]
    if split_fused and _FUSED_QKV.search(name):
        rows, cols = t.shape[1:]
        axis = 1 if rows == 3 * cols or (rows % 3 == 0 and cols != 3 * rows) else 2
        if t.shape[axis] % 3 == 0:
            parts = t.chunk(3, dim=axis)
            return [LayerMatrices(f"{name}[{p}]", "attention", _tall(c).unsqueeze(1)) for p, c in zip("qkv", parts)]
    kind = "embedding" if _EMBED_NAME.search(name) else "dense"
    return [LayerMatrices(name, kind, _tall(t).unsqueeze(1))]


def _conv_layer(name: str, t: Tensor, conv: str) -> LayerMatrices:
    B = t.shape[0]
    if t.dim() == 4:  # Conv1d (out, in, k): one matrix per kernel position
        kind, t = "conv1d", t.unsqueeze(-1)
    else:
        kind = "conv2d"
    out_c, in_c, kh, kw = t.shape[1:]
    if conv == "flatten":  # one out x (in*kh*kw) matrix, as torch's unfold sees it
        return LayerMatrices(name, kind, _tall(t.reshape(B, 1, out_c, in_c * kh * kw)))
    if out_c + in_c >= kh + kw:  # WeightWatcher's channel test: (out, in, kh, kw) -> slices W[:, :, i, j]
        slices = t.permute(0, 3, 4, 1, 2).reshape(B, kh * kw, out_c, in_c)
    else:  # (kh, kw, in, out) layouts: slices W[i, j, :, :]
        slices = t.reshape(B, out_c * in_c, kh, kw)
    return LayerMatrices(name, kind, _tall(slices))
