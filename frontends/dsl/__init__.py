"""The Python DSL: trace Python code on tensors into an irgraph Graph, and a layers library.

    import numpy as np, irgraph
    from irgraph.frontends import dsl

    model = dsl.Sequential(dsl.Conv2D(8, 3, padding="same"), dsl.ReLU(), dsl.MaxPool2D(),
                           dsl.Flatten(), dsl.Dense(10), dsl.Softmax())
    compiled = irgraph.compile(model, target="cpu", input_specs=[(None, 1, 8, 8)])
    probs = compiled(np.zeros((4, 1, 8, 8), np.float32))

``dsl.functional`` (``F``) has one function per registry op; ``Module.trace`` /
``Module.to_graph`` give the graph for inference (parameters as constants) or training
(parameters as graph inputs, see ``TracedModel``).
"""
from . import functional, init  # noqa: F401
from . import functional as F  # noqa: F401
from .layers import *  # noqa: F401,F403
from .layers import __all__ as _LAYERS
from .module import Module, ModuleList, Sequential  # noqa: F401
from .parameter import Buffer, Parameter  # noqa: F401
from .specs import InputSpec  # noqa: F401
from .tensor import Tensor  # noqa: F401
from .trace import Tracer, current_tracer, trace  # noqa: F401
from .traced import RandomInput, TracedModel  # noqa: F401

__all__ = ["functional", "init", "F", "Module", "ModuleList", "Sequential", "Buffer", "Parameter",
           "InputSpec", "Tensor", "Tracer", "current_tracer", "trace", "RandomInput", "TracedModel",
           *_LAYERS]
