"""The no-GPU compile gate: every kernel the backend generates for the MLP, ResNet-18 and the
BERT encoder compiles with nvcc for sm_80 and sm_90 (one translation unit, one nvcc call per
arch, cached by source hash) with zero register spills, no stack frame and static shared
memory within 48 KiB; the PTX is produced for the lowest arch."""
from __future__ import annotations

import os
import sys

import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import models  # noqa: E402
from cudacheck import program_for  # noqa: E402

from irgraph.backends.cuda import nvcc  # noqa: E402

pytestmark = pytest.mark.skipif(nvcc.nvcc_path() is None, reason="nvcc (CUDA toolkit) is not installed")


@pytest.fixture(scope="module")
def gate():
    progs = [program_for(models.mlp(), {"N": 1}, prefix="mlp_"),
             program_for(models.resnet18(), {"N": 1}, prefix="r18_"),
             program_for(models.bert_encoder(), {"N": 1, "S": 16}, prefix="bert_")]
    bins = nvcc.compile_source("\n".join(p.source for p in progs), archs=("sm_80", "sm_90"))
    return progs, bins


def test_every_kernel_compiles_without_spills_or_stack(gate):
    progs, bins = gate
    assert nvcc.problems(bins) == []
    fns = {la.launch.fn for p in progs for la in p.launches()}
    assert len(fns) > 120
    for fn in fns:
        per = bins.report.get(fn)
        assert per is not None and set(per) == {"sm_80", "sm_90"}, fn
        for r in per.values():
            assert r["regs"] <= 255 and r["spill_st"] == 0 and r["spill_ld"] == 0 and r["stack"] == 0


def test_cubins_and_ptx_are_produced(gate):
    _, bins = gate
    for arch in ("sm_80", "sm_90"):
        assert bins.cubins[arch][:4] == b"\x7fELF"
    assert ".entry" in bins.ptx and bins.ptx_arch == "compute_80"


def test_gemm_schedules_fit_their_occupancy_target(gate):
    """The launch bounds promise two 256-thread GEMM / implicit-GEMM conv blocks per SM: at
    most 128 registers, so at least 25% of an H100's warp slots; the convolutions reach 50%."""
    progs, bins = gate
    seen = 0
    for p in progs:
        for la in p.launches():
            if la.launch.kind.startswith(("gemm", "conv")) and la.launch.config != "direct":
                seen += 1
                for arch, r in bins.report[la.launch.fn].items():
                    assert r["regs"] <= 128 and r["smem"] <= 48 * 1024
                    blocks, occ = nvcc.occupancy(r["regs"], r["smem"], 256, arch)
                    assert blocks >= 2 and occ >= 0.25, (la.launch.fn, r)
                    if la.launch.kind.startswith("conv"):
                        assert occ >= 0.5, (la.launch.fn, r)
    assert seen >= 30


def test_resnet18_convs_are_single_implicit_gemm_launches(gate):
    """Every conv (+BN+ReLU+residual) of ResNet-18 is one implicit-GEMM launch: no padded copy,
    no im2col matrix, no separate epilogue pass."""
    progs, _ = gate
    r18 = progs[1]
    kinds = [la.launch.kind for la in r18.launches()]
    assert kinds.count("conv+epilogue") == 20 and len(kinds) == 23, kinds
    assert "map" not in kinds[:1] and kinds.count("map") == 1    # the max-pool only


def test_ptxas_report_parser():
    log = ("ptxas info    : Compiling entry function 'k_0' for 'sm_90'\n"
           "ptxas info    : Function properties for k_0\n"
           "    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 1 barriers, 8448 bytes smem, 400 bytes cmem[0]\n")
    rep = nvcc.parse_ptxas(log)
    assert rep == {"k_0": {"sm_90": {"regs": 40, "barriers": 1, "smem": 8448, "stack": 8,
                                     "spill_st": 4, "spill_ld": 4}}}
    from irgraph.backends.cuda.nvcc import Binaries
    b = Binaries(("sm_90",), report=rep)
    assert len(nvcc.problems(b)) == 2
