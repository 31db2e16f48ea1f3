"""irgraph: a deep-learning compiler and runtime.

    import irgraph
    model = irgraph.compile("model.onnx", target="interp")
    y = model(x)
"""
from .version import __version__  # noqa: F401
from .errors import (IrgraphError, ModelImportError, UnsupportedOpError, ShapeError,  # noqa: F401
                     VerifyError, CompileError, InputError, ExecutionError)
from .dtype import DType  # noqa: F401
from .types import TensorType  # noqa: F401
from .graph import Graph, Node, Value  # noqa: F401
from . import ops  # noqa: F401  (registers every op)
from .interpreter import run_graph  # noqa: F401
from .compiled import CompiledModel  # noqa: F401
from .api import compile, to_graph  # noqa: F401
from .artifact import load  # noqa: F401,E402
from .training import Trainer, train  # noqa: F401,E402
