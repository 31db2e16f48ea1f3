"""Shared test setup: the in-code model builders (``models``) and the ONNX node-case runner
(``node_cases``) are importable by name; the ``gpu`` marker skips without a CUDA device."""
from __future__ import annotations

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
for _p in (_HERE, os.path.join(_HERE, "frontends", "onnx")):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from cuda_device import have_gpu  # noqa: E402

def pytest_collection_modifyitems(config, items):
    if any("gpu" in it.keywords for it in items) and not have_gpu():
        skip = pytest.mark.skip(reason="needs a CUDA device (pycuda found none)")
        for it in items:
            if "gpu" in it.keywords:
                it.add_marker(skip)
