"""The layers library: Keras/PyTorch-style building blocks, each a ``Module`` tracing to core ops."""
from .activations import (GELU, Identity, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh,  # noqa: F401
                          get_activation)
from .attention import MultiHeadAttention, TransformerEncoderLayer  # noqa: F401
from .conv import Conv2D  # noqa: F401
from .dense import Dense, Linear  # noqa: F401
from .dropout import Dropout  # noqa: F401
from .embedding import Embedding  # noqa: F401
from .normalization import BatchNorm, LayerNorm  # noqa: F401
from .pooling import AvgPool2D, Flatten, GlobalAvgPool, GlobalMaxPool, MaxPool2D  # noqa: F401
from .recurrent import GRU, LSTM  # noqa: F401

__all__ = ["GELU", "Identity", "LeakyReLU", "ReLU", "Sigmoid", "Softmax", "Tanh", "get_activation",
           "MultiHeadAttention", "TransformerEncoderLayer", "Conv2D", "Dense", "Linear", "Dropout",
           "Embedding", "BatchNorm", "LayerNorm", "AvgPool2D", "Flatten", "GlobalAvgPool",
           "GlobalMaxPool", "MaxPool2D", "GRU", "LSTM"]
