"""Graph-to-graph passes and the pass manager.

    from irgraph.passes import optimize, run_passes, PassContext
    graph, report = optimize(graph, level=2)

Every module in this package that registers a pass is imported here, so ``get_pass(name)``
finds it; the pipelines (``pipelines.py``) name the order.
"""
from __future__ import annotations

import importlib
import pkgutil

from .context import PassContext  # noqa: F401
from .manager import PassRecord, PassReport, optimize, run_passes  # noqa: F401
from .registry import Pass, PassResult, all_passes, get_pass, register_pass  # noqa: F401
from .pipelines import PIPELINES, pipeline  # noqa: F401

_INFRA = {"context", "manager", "registry", "pipelines", "rewrite", "group", "instruments",
          "bisect", "draw"}

for _m in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _m not in _INFRA and not _m.startswith("_"):
        importlib.import_module(f"{__name__}.{_m}")
