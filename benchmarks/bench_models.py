"""Whole models per target: compile time, latency, peak memory, planned arena, ratio to onnxruntime.

Models are built in code with fixed seeds (tests/models), their symbolic dims bound to the sizes
below before anything is compiled, so every target and onnxruntime see the same static shapes:

    mlp_b1, mlp_b64     MLP 784-512-512-10, batch 1 and 64
    resnet20            CIFAR-style ResNet-20 (16/32/64 channels, 3 basic blocks a stage), 32x32
    resnet18            ResNet-18 at 224x224, batch 1
    bert_encoder        4 post-LN layers, hidden 256, 4 heads, seq 128, batch 1
    matmul512/1024/2048 one square fp32 MatMul of two inputs

Targets: ``interp`` and ``cpu`` when its backend imports. Every runtime uses the same thread
count: the cores asv may use, or ``IRGRAPH_BENCH_THREADS``. ``track_ratio_vs_onnxruntime`` is
irgraph's median latency over onnxruntime's, both measured in one loop taking turns by
``irgraph.bench`` (the same figure as ``irgraph bench --compare onnxruntime``: one call each at
1 thread, blocks of calls at more); it fails when the
outputs disagree. ``time_compile`` is ONNX import + ``irgraph.compile`` with the compile cache as
it is (warm after the first sample on ``cpu``).

    asv run --bench bench_models                       # all of it (interp on ResNet-18 is slow)
    asv run --bench "bench_models.*mlp_b1.*"           # one model
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import irgraph  # noqa: E402
from irgraph.bench import (bench, bind_dims, compile_with_threads, default_threads,  # noqa: E402
                           peak_arena_bytes, set_blas_threads)
from irgraph.random_inputs import random_inputs  # noqa: E402

THREADS = int(os.environ.get("IRGRAPH_BENCH_THREADS") or default_threads())
set_blas_threads(THREADS)   # the interpreter's matmuls get the same thread count as everyone


def _matmul(n: int):
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], f"matmul{n}",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [n, n]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [n, n])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], producer_name="irgraph-bench")
    m.ir_version = 8
    return m


def _builders():
    import models
    return {
        "mlp_b1": (models.mlp, {"N": 1}),
        "mlp_b64": (models.mlp, {"N": 64}),
        "resnet20": (lambda: models.resnet(widths=(16, 32, 64), blocks=3, image=32, name="resnet20"), {"N": 1}),
        "resnet18": (models.resnet18, {"N": 1}),
        "bert_encoder": (models.bert_encoder, {"N": 1, "S": 128}),
        "matmul512": (lambda: _matmul(512), {}),
        "matmul1024": (lambda: _matmul(1024), {}),
        "matmul2048": (lambda: _matmul(2048), {}),
    }


MODELS = ["mlp_b1", "mlp_b64", "resnet20", "resnet18", "bert_encoder", "matmul512", "matmul1024", "matmul2048"]


def _targets() -> list[str]:
    out = ["interp"]
    try:
        irgraph.targets.get_target("cpu")   # registered lazily: its backend must import
        out.append("cpu")
    except Exception:
        pass
    return out


TARGETS = _targets()

# per process: asv calls setup before every sample; build and compile once
_PROTOS: dict = {}
_COMPILED: dict = {}
_RATIOS: dict = {}


def model_proto(name: str):
    """The model as a static-shaped ONNX ModelProto (built once per process)."""
    if name not in _PROTOS:
        build, dims = _builders()[name]
        _PROTOS[name] = bind_dims(build(), dims)[0]
    return _PROTOS[name]


def compiled_model(name: str, target: str):
    key = (name, target)
    if key not in _COMPILED:
        _COMPILED[key] = compile_with_threads(irgraph.to_graph(model_proto(name)), target, None, THREADS)[0]
    return _COMPILED[key]


def model_inputs(compiled) -> list[np.ndarray]:
    feeds = random_inputs(dict(zip(compiled.input_names, compiled.input_types)), seed=0)
    return [feeds[n] for n in compiled.input_names]


class _Base:
    params = (MODELS, TARGETS)
    param_names = ["model", "target"]
    timeout = 900


class ModelCompile(_Base):
    number = 1
    repeat = (1, 5, 120.0)

    def setup(self, name, target):
        self.proto = model_proto(name)

    def time_compile(self, name, target):
        compile_with_threads(self.proto, target, None, THREADS)


class ModelRun(_Base):
    def setup(self, name, target):
        self.model = compiled_model(name, target)
        self.arrays = model_inputs(self.model)
        self.model.run(*self.arrays)    # first call: any lazy specialization happens here

    def time_run(self, name, target):
        self.model.run(*self.arrays)

    def peakmem_run(self, name, target):
        self.model.run(*self.arrays)


class ModelArena(_Base):
    def setup(self, name, target):
        self.bytes = peak_arena_bytes(compiled_model(name, target))
        if self.bytes is None:   # e.g. interp at -O0: nothing planned, nothing to track
            raise NotImplementedError(f"target {target} plans no arena")

    def track_peak_arena_bytes(self, name, target):
        return self.bytes
    track_peak_arena_bytes.unit = "bytes"


class ModelVsOnnxruntime(_Base):
    def setup(self, name, target):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise NotImplementedError("onnxruntime is not installed") from None

    def track_ratio_vs_onnxruntime(self, name, target):
        key = (name, target)
        if key not in _RATIOS:
            r = bench(model_proto(name), target, compare=["onnxruntime"], threads=THREADS, warmup=2,
                      budget_s=2.0)
            if not r.outputs_match:
                raise AssertionError(r.mismatch_message())
            _RATIOS[key] = r.ratio_vs["onnxruntime"]
        return _RATIOS[key]
    track_ratio_vs_onnxruntime.unit = "ratio"
