"""The ``cuda`` target without a GPU: it compiles (cubins + PTX + ptxas report), running says in
one line why it cannot; artifacts (``irgraph compile --target cuda -o``) hold the cubins and
launch plan, ``irgraph show`` lists each kernel's registers and shared memory, and loading
needs no nvcc. Options and the onnx.backend adapter."""
from __future__ import annotations

import json
import os
import sys

import numpy as np
import onnx
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import models  # noqa: E402
from cuda_device import have_gpu  # noqa: E402

import irgraph  # noqa: E402
from irgraph.backends.cuda import nvcc  # noqa: E402
from irgraph.errors import CompileError, ExecutionError, IrgraphError  # noqa: E402

needs_nvcc = pytest.mark.skipif(nvcc.nvcc_path() is None, reason="nvcc (CUDA toolkit) is not installed")


def _small():
    return models.mlp(sizes=(20, 33, 7))


@needs_nvcc
def test_cuda_target_compiles_for_the_plan_dims_without_a_gpu():
    cm = irgraph.compile(_small(), target="cuda", arch="sm_80,sm_90")
    (exe,) = cm._run.programs.values()
    assert set(exe.binaries.cubins) == {"sm_80", "sm_90"} and exe.binaries.ptx
    assert nvcc.problems(exe.binaries) == []
    for la in exe.program.launches():
        assert set(exe.binaries.report[la.launch.fn]) == {"sm_80", "sm_90"}


@needs_nvcc
@pytest.mark.skipif(have_gpu(), reason="this machine has a GPU: the run succeeds")
def test_running_without_a_device_is_one_clear_line():
    cm = irgraph.compile(_small(), target="cuda")
    with pytest.raises(ExecutionError) as e:
        cm(np.zeros((1, 20), np.float32))
    msg = str(e.value)
    assert "\n" not in msg and "target 'cuda'" in msg and "cuda-emulator" in msg


def test_options_are_checked():
    with pytest.raises(CompileError, match="no option"):
        irgraph.compile(_small(), target="cuda-emulator", arch="sm_80")
    with pytest.raises(CompileError, match="schedule"):
        irgraph.compile(_small(), target="cuda-emulator", schedule="sideways")
    with pytest.raises(CompileError, match="arch"):
        irgraph.compile(_small(), target="cuda", arch="gfx90a")
    assert {"cuda", "cuda-emulator"} <= set(irgraph.targets.target_names())


@needs_nvcc
def test_artifact_holds_cubins_and_launch_plan_and_loads_without_nvcc(tmp_path, monkeypatch):
    from irgraph.cli import main
    src = tmp_path / "m.onnx"
    onnx.save(models.resnet(widths=(8, 16), image=12), str(src))
    out = tmp_path / "m.irg"
    assert main(["compile", str(src), "--target", "cuda", "-o", str(out)]) == 0
    m = json.loads((out / "manifest.json").read_text())
    (prog,) = m["cuda_programs"]
    assert set(prog["cubins"]) == {"sm_80", "sm_90"} and prog["ptx"]
    assert (out / prog["cubins"]["sm_90"]).read_bytes()[:4] == b"\x7fELF"
    launches = [la for la in prog["launches"] if "fn" in la]
    assert launches and all(la["ptxas"]["sm_80"]["regs"] > 0 for la in launches)
    assert all(la["grid"] and la["block"] and la["buffers"] for la in launches)
    # show: one line per kernel with registers and shared memory
    from irgraph.artifact import summary
    text = summary(out)
    for la in launches:
        line = next(ln for ln in text.splitlines() if la["fn"] in ln)
        assert "regs" in line and "B smem" in line
    # loading takes the stored cubins: nvcc is never called
    from irgraph.backends.cuda import target as cuda_target

    def no_nvcc(*a, **k):
        raise AssertionError("nvcc was called while loading an artifact")
    monkeypatch.setattr(cuda_target.nvcc, "compile_source", no_nvcc)
    loaded = irgraph.load(out)
    assert loaded.target == "cuda" and loaded.artifact["objects_used"] == 1


def test_onnx_backend_accepts_the_cuda_targets():
    from irgraph.frontends.onnx import backend
    model = _small()
    x = np.random.default_rng(0).standard_normal((2, 20)).astype(np.float32)
    want = backend.prepare(model, device="CPU", target="interp").run([x])
    got = backend.prepare(model, device="CPU", target="cuda-emulator", schedule="reverse").run([x])
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4)
    with pytest.raises(IrgraphError, match="does not run on device"):
        backend.prepare(model, device="CPU", target="cuda")
    assert backend.supports_device("CUDA")


@pytest.mark.gpu
def test_models_on_the_gpu_match_the_emulator():
    """Run with a GPU (see README): the same models through PyCUDA against the emulator."""
    for build, dims in ((models.mlp, {"N": 3}), (models.resnet, {"N": 2}), (models.bert_layer, {"N": 2, "S": 7})):
        model = build()
        feeds = models.feeds(model, dims, seed=2)
        gpu = irgraph.compile(model, target="cuda").run(**feeds)
        emu = irgraph.compile(model, target="cuda-emulator").run(**feeds)
        for a, b in zip(gpu, emu):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
