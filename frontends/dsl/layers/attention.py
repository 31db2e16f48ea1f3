"""MultiHeadAttention and TransformerEncoderLayer over batch-first (batch, seq, embed) inputs.

Attention itself is one ``attention`` node (the composite the backends run as a fused
kernel or lower from its decomposition); the projections are Dense layers. ``attn_mask``
follows ONNX: a bool mask is True where a query may attend (PyTorch's bool masks mean the
opposite), a float mask is added to the scores; it broadcasts to (batch, heads, q_seq, k_seq).
"""
from __future__ import annotations

from irgraph.errors import IrgraphError

from .. import functional as F
from ..module import Module
from .activations import get_activation
from .dense import Dense
from .dropout import Dropout
from .normalization import LayerNorm


class MultiHeadAttention(Module):
    """``MultiHeadAttention(embed_dim, num_heads)``: ``mha(query, key=None, value=None,
    attn_mask=None, is_causal=False)``; key and value default to the query (self-attention).
    Children ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` (Dense, Glorot-uniform, zero bias)."""

    def __init__(self, embed_dim: int, num_heads: int, *, use_bias: bool = True, kdim: int | None = None,
                 vdim: int | None = None, dtype="float32") -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise IrgraphError(f"MultiHeadAttention: embed_dim {embed_dim} is not a multiple of "
                               f"num_heads {num_heads}")
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        e = self.embed_dim
        self.q_proj = Dense(e, use_bias=use_bias, in_features=e, dtype=dtype)
        self.k_proj = Dense(e, use_bias=use_bias, in_features=kdim or e, dtype=dtype)
        self.v_proj = Dense(e, use_bias=use_bias, in_features=vdim or e, dtype=dtype)
        self.out_proj = Dense(e, use_bias=use_bias, in_features=e, dtype=dtype)

    def _heads(self, x):
        # (B, S, E) -> (B, H, S, D)
        return F.transpose(F.reshape(x, [0, 0, self.num_heads, self.head_dim]), perm=(0, 2, 1, 3))

    def forward(self, query, key=None, value=None, attn_mask=None, is_causal: bool = False):
        key = query if key is None else key
        value = key if value is None else value
        q = self._heads(self.q_proj(query))
        k = self._heads(self.k_proj(key))
        v = self._heads(self.v_proj(value))
        y = F.attention(q, k, v, attn_mask, is_causal=bool(is_causal))
        y = F.reshape(F.transpose(y, perm=(0, 2, 1, 3)), [0, 0, self.embed_dim])
        return self.out_proj(y)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward block, each with dropout, a residual connection and
    LayerNorm — after the residual (``norm_first=False``, the original Transformer and PyTorch's
    default) or before the block (``norm_first=True``, pre-norm)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int | None = None, dropout: float = 0.1,
                 activation="relu", *, layer_norm_eps: float = 1e-5, norm_first: bool = False,
                 dtype="float32") -> None:
        super().__init__()
        dff = dim_feedforward or 4 * d_model
        self.self_attn = MultiHeadAttention(d_model, nhead, dtype=dtype)
        self.linear1 = Dense(dff, in_features=d_model, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Dense(d_model, in_features=dff, dtype=dtype)
        self.norm1 = LayerNorm(d_model, epsilon=layer_norm_eps, dtype=dtype)
        self.norm2 = LayerNorm(d_model, epsilon=layer_norm_eps, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = get_activation(activation)
        self.norm_first = bool(norm_first)

    def _sa(self, x, attn_mask, is_causal):
        return self.dropout1(self.self_attn(x, x, x, attn_mask=attn_mask, is_causal=is_causal))

    def _ff(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        if self.norm_first:
            x = F.add(x, self._sa(self.norm1(x), attn_mask, is_causal))
            return F.add(x, self._ff(self.norm2(x)))
        x = self.norm1(F.add(x, self._sa(x, attn_mask, is_causal)))
        return self.norm2(F.add(x, self._ff(x)))
