"""AddressSanitizer over a small subset (BERT layer, GEMMs, softmax, grouped/depthwise/3-d
implicit-GEMM convolutions): the emulator built with -fsanitize=address, every
buffer in its own exact-size allocation, run in a child process with libasan preloaded (ASan
must be the first library loaded). Any out-of-bounds read or write aborts the child."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from irgraph.backends.cuda import emulator

_HERE = os.path.dirname(os.path.abspath(__file__))
_TESTS = os.path.dirname(os.path.dirname(_HERE))

CHILD = r"""
import math, sys
sys.path[:0] = [{here!r}, {tests!r}]
import numpy as np
import models
import test_cuda_kernels as tk
import test_cuda_conv as tc
from irgraph.interpreter import run_graph
from cudacheck import program_for, run_schedules, shared_module
import irgraph
progs = {{"bert": program_for(models.bert_layer(hidden=32, heads=2, ffn=48), {{"N": 2, "S": 5}}, prefix="b_"),
          "bmm": program_for(tk.CASES["bmm"][0], prefix="m_"),
          "gemm_tt": program_for(tk.CASES["gemm_tt"][0], prefix="g_"),
          "softmax": program_for(tk.CASES["softmax_long"][0], prefix="s_"),
          "conv": program_for(tc.CASES["groups"][0], prefix="cg_"),
          "dwconv": program_for(tc.CASES["depthwise_mult_stride"][0], prefix="cd_"),
          "conv3d": program_for(tc.CASES["conv3d"][0], prefix="c3_")}}
mod = shared_module(progs.values(), sanitize=True)
rng = np.random.default_rng(0)
m = models.bert_layer(hidden=32, heads=2, ffn=48)
feeds = models.feeds(m, {{"N": 2, "S": 5}})
res = run_schedules(progs["bert"], mod, [feeds[v.name] for v in progs["bert"].graph.inputs], sanitize=True)
want = irgraph.compile(m).run(**feeds)
for outs in res.values():
    np.testing.assert_allclose(outs[0], want[0], rtol=1e-4, atol=1e-4)
for k, key in (("bmm", "bmm"), ("gemm_tt", "gemm_tt"), ("softmax", "softmax_long")):
    _, ref, shapes, red = tk.CASES[key]
    ins = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    for outs in run_schedules(progs[k], mod, ins, sanitize=True).values():
        np.testing.assert_allclose(outs[0], ref(*ins), rtol=1e-4, atol=1e-5 * math.sqrt(red))
for k in ("conv", "dwconv", "conv3d"):
    model = tc.CASES[{{"conv": "groups", "dwconv": "depthwise_mult_stride", "conv3d": "conv3d"}}[k]][0]
    g = irgraph.compile(model).graph
    feeds = tc._feeds(model)
    want = run_graph(g, [feeds[v.name] for v in g.inputs])[0]
    for outs in run_schedules(progs[k], mod, [feeds[v.name] for v in progs[k].graph.inputs], sanitize=True).values():
        np.testing.assert_allclose(outs[0], want, rtol=1e-4, atol=1e-4)
print("ASAN-CLEAN")
"""


@pytest.mark.skipif(emulator.sanitizer_runtime() is None, reason="g++ has no AddressSanitizer runtime")
def test_no_out_of_bounds_access_under_asan():
    code = CHILD.format(here=_HERE, tests=_TESTS)
    r = subprocess.run([sys.executable, "-c", code], env=emulator.asan_env(), capture_output=True, text=True,
                       timeout=600)
    assert "AddressSanitizer" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 0 and "ASAN-CLEAN" in r.stdout, (r.stdout[-2000:], r.stderr[-3000:])
