"""The test models (MLP, ResNet, BERT-style layer) on the CUDA emulator, against the numpy
interpreter, under forward, reverse and shuffled schedules; batch sizes and sequence lengths
that are not multiples of any tile size. Also the public ``cuda-emulator`` target end to end."""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import models  # noqa: E402
from cudacheck import SCHEDULES, assert_schedules_agree, program_for, run_schedules, shared_module  # noqa: E402

import irgraph  # noqa: E402
from irgraph.interpreter import run_graph  # noqa: E402

# (builder, dims, longest reduction: tolerances are fp32 rtol 1e-4 / atol 1e-5, the atol
# scaled by the square root of the longest sum an output goes through)
MODELS = {
    "mlp": (models.mlp, {"N": 3}, 784),
    "resnet": (models.resnet, {"N": 3}, 576),
    "bert_layer": (models.bert_layer, {"N": 3, "S": 7}, 128),
}


@pytest.fixture(scope="module")
def built():
    progs = {name: program_for(build(), dims, prefix=f"{name}_") for name, (build, dims, _) in MODELS.items()}
    return progs, shared_module(progs.values())


def _reference(model, feeds):
    g = irgraph.compile(model).graph
    return run_graph(g, [feeds[v.name] for v in g.inputs])


@pytest.mark.parametrize("name", list(MODELS))
def test_model_matches_interpreter_under_every_schedule(name, built):
    progs, mod = built
    build, dims, red = MODELS[name]
    model = build()
    feeds = models.feeds(model, dims, seed=1)
    prog = progs[name]
    ins = [feeds[v.name] for v in prog.graph.inputs]
    res = run_schedules(prog, mod, ins)
    assert set(res) == set(SCHEDULES)
    outs = assert_schedules_agree(res)
    ref = _reference(model, feeds)
    for got, want in zip(outs, ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * math.sqrt(red))


def test_models_use_the_gpu_schedules(built):
    """The fused GEMM and implicit-GEMM conv epilogues, block/warp reductions and grid-stride
    maps are what runs, not single-thread fallbacks."""
    progs, _ = built
    kinds = {}
    for p in progs.values():
        for k, v in p.report.stages.items():
            kinds[k] = kinds.get(k, 0) + v
    assert kinds.get("gemm+epilogue", 0) >= 5
    assert kinds.get("conv+epilogue", 0) >= 4      # the ResNet's convs: implicit GEMM, BN/ReLU fused
    assert kinds.get("reduce", 0) >= 4
    assert kinds.get("map", 0) >= 10
    assert kinds.get("serial", 0) == 0, kinds


def test_cuda_emulator_target_end_to_end():
    model = models.bert_layer(hidden=32, heads=2, ffn=48)
    feeds = models.feeds(model, {"N": 2, "S": 3})
    want = irgraph.compile(model).run(**feeds)
    for sched in ("forward", "reverse", "shuffled"):
        cm = irgraph.compile(model, target="cuda-emulator", schedule=sched, seed=5)
        got = cm.run(**feeds)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5 * math.sqrt(48))
    assert "cuda:" in str(cm._run.report)
