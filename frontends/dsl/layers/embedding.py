"""Embedding: rows of a (num_embeddings, embedding_dim) table picked by integer ids (``gather``)."""
from __future__ import annotations

from .. import functional as F
from ..module import Module
from ..parameter import Parameter
from ..specs import as_dtype


class Embedding(Module):
    """``Embedding(num_embeddings, embedding_dim)``: ids of any shape -> ids.shape + (dim,).
    Initialized U(-0.05, 0.05) as Keras does (``init="normal"`` gives PyTorch's N(0, 1))."""

    def __init__(self, num_embeddings: int, embedding_dim: int, *, init="small_uniform",
                 dtype="float32") -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.dtype = as_dtype(dtype)
        self.weight = Parameter((self.num_embeddings, self.embedding_dim), self.dtype, init,
                                fans=(self.num_embeddings, self.embedding_dim))

    def forward(self, ids):
        return F.gather(self.weight, ids, axis=0)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"
