"""Pruning from the command line and the API: ``show --prune ... --stats`` (the passes in the pass
table and the report), ``compile --prune`` artifacts that run and reload, ``bench --prune``, and
one-line errors with a non-zero exit for bad specs."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

import irgraph
import models
from irgraph.cli import main
from irgraph.errors import IrgraphError


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("prune") / "mlp.onnx"
    onnx.save(models.mlp(sizes=(48, 64, 32, 4), batch=32), p)
    return p


@pytest.fixture(scope="module")
def resnet_path(tmp_path_factory):
    p = tmp_path_factory.mktemp("prune") / "resnet.onnx"
    onnx.save(models.resnet(widths=(8, 16), blocks=1, image=8), p)
    return p


def test_show_stats_lists_the_pass_and_the_report(resnet_path, capsys):
    assert main(["show", str(resnet_path), "-O2", "--prune", "channels:0.5", "--stats", "--no-ir"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("passes (-O2):"):]
    assert "prune_channels" in table and table.index("fold_batch_norm") < table.index("prune_channels")
    assert "pruning channels:0.5" in out and "(tied by residual adds)" in out
    assert "left alone (reaches the graph output" in out
    assert "-> 8x4x3x3" in out          # a conv of the second stage: 8 of 16 outputs, 4 of 8 inputs


def test_show_json_carries_the_report(mlp_path, capsys):
    assert main(["show", str(mlp_path), "--prune", "magnitude:0.9:global", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    rep = s["prune_report"]
    assert rep["spec"] == "magnitude:0.9:global"
    assert [p["name"] for p in s["passes"]][:3] == ["infer_shapes", "fold_constants", "prune_magnitude"]
    before, after = rep["before"]["totals"], rep["after"]["totals"]
    assert after["nonzero"] < 0.2 * before["nonzero"] and after["params"] <= before["params"]


def test_compile_artifact_runs_and_reloads(mlp_path, tmp_path, capsys):
    out = tmp_path / "mlp.irg"
    assert main(["compile", str(mlp_path), "--prune", "magnitude:0.95", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pruning magnitude:0.95:layer" in printed and "-> CSR" in printed
    m = irgraph.compile(str(mlp_path), target="cpu", prune="magnitude:0.95")
    x = np.random.default_rng(0).standard_normal((32, 48)).astype(np.float32)
    loaded = irgraph.load(str(out))
    np.testing.assert_allclose(loaded(x), m(x), rtol=1e-5, atol=1e-6)
    # the same zeros run densely on the interpreter: the sparse kernels change no result
    ref = irgraph.compile(str(mlp_path), target="interp", prune="magnitude:0.95")
    np.testing.assert_allclose(m(x), ref(x), rtol=1e-4, atol=1e-5)
    # a fresh process loads the artifact (the sparse ops are registered by `import irgraph`)
    r = subprocess.run([sys.executable, "-m", "irgraph", "run", str(out)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert "logits: float32[32, 4]" in r.stdout


def test_bench_prints_both_builds(resnet_path, capsys):
    assert main(["bench", str(resnet_path), "--prune", "channels:0.5", "--repeat", "5", "--warmup", "1",
                 "--threads", "1", "--dim", "N=2"]) == 0
    out = capsys.readouterr().out
    assert "irgraph pruned" in out and "irgraph dense" in out and "speedup over unpruned" in out
    assert "latency" in out and "pruning channels:0.5" in out


BAD = ["channel:0.3", "magnitude", "magnitude:x", "magnitude:1", "magnitude:-0.5", "channels:0.3:global",
       "magnitude:0.5:model", "magnitude:nan"]


@pytest.mark.parametrize("spec", BAD)
def test_bad_specs_are_one_line_errors(mlp_path, spec, capsys):
    assert main(["show", str(mlp_path), "--prune", spec]) == 1
    err = capsys.readouterr().err
    assert err.startswith("irgraph: error:") and err.count("\n") == 1 and "RATIO" in err
    with pytest.raises(IrgraphError, match="prun"):
        irgraph.compile(str(mlp_path), prune=spec)


def test_bad_spec_exit_status_in_a_process(mlp_path, tmp_path):
    r = subprocess.run([sys.executable, "-m", "irgraph", "compile", str(mlp_path), "--prune", "channels:2",
                        "-o", str(tmp_path / "unused.irg")], capture_output=True, text=True, timeout=300)
    assert not (tmp_path / "unused.irg").exists()
    assert r.returncode == 1 and "out of range" in r.stderr and "Traceback" not in r.stderr


def test_api_rejects_a_non_string():
    with pytest.raises(IrgraphError, match="string"):
        irgraph.compile(models.mlp(sizes=(4, 3)), prune=0.5)
