"""The PyCUDA runtime's own code on a machine without a GPU: a fake ``pycuda.driver`` whose
kernels run in the CUDA emulator (``fake_pycuda.py``). Checks the launch plan, the single
weights upload and the arena against the emulator executor, and CUDA graphs: recorded on the
first call, replayed as one launch on later calls, re-recorded when the I/O buffers move,
turned off by ``graphs=False``, by fallback nodes and by a driver without stream capture."""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import models  # noqa: E402
from cudacheck import program_for, shared_module  # noqa: E402
from fake_pycuda import FakeDriver  # noqa: E402

from irgraph.backends.cuda.nvcc import Binaries  # noqa: E402
from irgraph.backends.cuda.runtime_emu import EmuExecutor  # noqa: E402
from irgraph.backends.cuda.runtime_pycuda import PyCudaSession, pick_image  # noqa: E402


@pytest.fixture(scope="module")
def built():
    progs = {"resnet": program_for(models.resnet(widths=(8, 16), image=12), {"N": 2}, prefix="pr_"),
             "bert": program_for(models.bert_layer(hidden=32, heads=2, ffn=48), {"N": 2, "S": 5}, prefix="pb_")}
    return progs, shared_module(progs.values())


def _bins():
    return Binaries(("sm_80", "sm_90"), cubins={"sm_80": b"\x7fELF80", "sm_90": b"\x7fELF90"}, ptx="// ptx",
                    ptx_arch="compute_80")


def _feeds(name, prog, seed):
    m = models.resnet(widths=(8, 16), image=12) if name == "resnet" else models.bert_layer(hidden=32, heads=2, ffn=48)
    dims = {"N": 2} if name == "resnet" else {"N": 2, "S": 5}
    f = models.feeds(m, dims, seed=seed)
    return [f[v.name] for v in prog.graph.inputs]


@pytest.mark.parametrize("name", ["resnet", "bert"])
def test_session_matches_the_emulator_and_replays_one_graph(name, built):
    progs, mod = built
    prog = progs[name]
    drv = FakeDriver(mod)
    sess = PyCudaSession(prog, _bins(), driver=drv)
    assert sess.graphs and drv.image == b"\x7fELF90"      # the sm_90 cubin for a 9.0 device
    ex = EmuExecutor(prog, module=mod)
    nl = len(prog.launches())
    for call, seed in enumerate((1, 2, 3)):
        ins = _feeds(name, prog, seed)
        got = sess.run(ins)
        want = ex.run(ins)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    # recorded once, replayed on every call; no kernel ever launched one by one
    assert drv.calls["begin_capture"] == 1 and drv.calls["instantiate"] == 1
    assert drv.calls["graph_launch"] == 3 == sess.graph_launches
    assert drv.calls["kernel_launch"] == 0 and nl > 3
    # weights uploaded once: allocations are the weights, the arena and the I/O buffers only
    assert drv.calls["mem_alloc"] == 2 + len(prog.graph.inputs) + len(prog.graph.outputs)


def test_graphs_off_launches_one_by_one(built):
    progs, mod = built
    prog = progs["resnet"]
    drv = FakeDriver(mod)
    sess = PyCudaSession(prog, _bins(), driver=drv, graphs=False)
    ins = _feeds("resnet", prog, 4)
    got = sess.run(ins)
    np.testing.assert_array_equal(got[0], EmuExecutor(prog, module=mod).run(ins)[0])
    assert drv.calls["begin_capture"] == 0 and drv.calls["kernel_launch"] == len(prog.launches())


def test_driver_without_capture_launches_one_by_one(built):
    progs, mod = built
    prog = progs["resnet"]
    drv = FakeDriver(mod, capture=False)
    sess = PyCudaSession(prog, _bins(), driver=drv)
    assert not sess.graphs
    sess.run(_feeds("resnet", prog, 5))
    assert drv.calls["kernel_launch"] == len(prog.launches()) and drv.calls["graph_launch"] == 0


def test_refused_capture_falls_back_with_a_note(built):
    progs, mod = built
    prog = progs["resnet"]
    drv = FakeDriver(mod)

    def refuse(self):     # as cuStreamEndCapture on an invalidated capture: capture ends, no graph
        self.recording = None
        raise RuntimeError("cuStreamEndCapture failed: operation not permitted when stream is capturing")
    drv.Stream.end_capture = refuse
    sess = PyCudaSession(prog, _bins(), driver=drv)
    ins = _feeds("resnet", prog, 6)
    got = sess.run(ins)
    np.testing.assert_array_equal(got[0], EmuExecutor(prog, module=mod).run(ins)[0])
    assert not sess.graphs and "CUDA graphs off" in sess.graph_note
    assert drv.calls["kernel_launch"] == len(prog.launches())


def test_moved_buffers_rerecord(built):
    progs, mod = built
    prog = progs["bert"]
    drv = FakeDriver(mod)
    sess = PyCudaSession(prog, _bins(), driver=drv)
    ins = _feeds("bert", prog, 7)
    sess.run(ins)
    old = dict(sess._io)            # kept alive, so the new buffers get new addresses
    sess._io.clear()                # as if a call needed larger buffers
    got = sess.run(ins)
    assert drv.calls["begin_capture"] == 2 and drv.calls["graph_launch"] == 2
    want = EmuExecutor(prog, module=mod).run(ins)
    np.testing.assert_array_equal(got[0], want[0])
    assert old


def test_image_choice():
    b = _bins()
    assert pick_image(b, (8, 6)) == ("sm_80", b"\x7fELF80")       # same major, lower minor
    assert pick_image(b, (9, 0)) == ("sm_90", b"\x7fELF90")
    arch, img = pick_image(b, (10, 0))                              # newer: the PTX, JIT-compiled
    assert arch == "compute_80" and img.endswith(b"\0")
