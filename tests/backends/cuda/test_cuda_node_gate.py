"""The compile gate over the node cases: every kernel the backend generates for the ONNX node
cases the CPU backend passes compiles with nvcc for sm_80 and sm_90 with zero register spills,
no stack frame and static shared memory within 48 KiB.

The ~6,200 launches are ~2,100 distinct kernels (``KernelBatch``), compiled as eight
translation units per arch, cached on disk by source hash: about two minutes of nvcc cold on
two cores, under a second warm."""
from __future__ import annotations

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import node_coverage as cov  # noqa: E402

from irgraph.backends.cuda import nvcc  # noqa: E402

pytestmark = pytest.mark.skipif(nvcc.nvcc_path() is None, reason="nvcc (CUDA toolkit) is not installed")

ARCHS = ("sm_80", "sm_90")


@pytest.fixture(scope="module")
def gate():
    _, programs, _, batch = cov.planned()
    return programs, batch, batch.compile(ARCHS)


def test_every_node_case_kernel_compiles_without_spills_or_stack(gate):
    programs, batch, bins = gate
    assert nvcc.problems(bins) == []
    fns = [la.launch.fn for ps in programs.values() for p in ps for la in p.launches()]
    assert len(fns) == batch.launches > 5000
    for fn in fns:
        per = bins.report.get(fn)
        assert per is not None and set(per) == set(ARCHS), fn
        for r in per.values():
            assert r["spill_st"] == 0 and r["spill_ld"] == 0 and r["stack"] == 0, fn


def test_translation_units_are_few(gate):
    _, batch, bins = gate
    assert len(bins.shards) == len(batch.shards) <= cov.SHARDS
    for b in bins.shards:
        assert set(b.cubins) == set(ARCHS) and not b.ptx
