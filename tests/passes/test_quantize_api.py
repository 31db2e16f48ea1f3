"""The quantization options of irgraph.compile and the CLI: checked with clear errors, calibration
data from .npz files and dicts (split into the model's batch), and ``irgraph compile/show/bench
--quantize`` end to end (in process)."""
from __future__ import annotations

import models
import numpy as np
import onnx
import pytest

import irgraph
from irgraph.cli import main
from irgraph.errors import CompileError, InputError
from irgraph.passes.quantize_options import QuantOptions, calibration_feeds, plan_passes

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def mlp_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("quant")
    m = models.mlp(sizes=(16, 12, 4), batch=2)
    onnx.save(m, d / "mlp.onnx")
    np.savez(d / "calib.npz", x=RNG.standard_normal((8, 16)).astype(np.float32))
    return d


@pytest.mark.parametrize("kw,err,match", [
    ({"quantize": "int4"}, CompileError, "unknown quantization 'int4'"),
    ({"quantize": "int8"}, CompileError, "needs calibration data"),
    ({"calibrate": {"x": 0}}, CompileError, "without quantize"),
    ({"quantize": "int8", "calibrate": {}, "observer": "mse"}, CompileError, "unknown observer"),
    ({"quantize": "int8", "calibrate": {}, "keep_float": 3}, CompileError, "keep_float"),
    ({"quantize": "int8", "calibrate": {"x": np.zeros((2, 16), np.float64)}}, InputError, "dtype"),
    ({"quantize": "int8", "calibrate": {"x": np.zeros((16,), np.float32)}}, InputError, "rank"),
    ({"quantize": "int8", "calibrate": {"x": np.zeros((3, 16), np.float32)}}, InputError, "multiple"),
    ({"quantize": "int8", "calibrate": 5}, InputError, "npz"),
])
def test_bad_options_are_clear_errors(mlp_files, kw, err, match):
    with pytest.raises(err, match=match):
        irgraph.compile(str(mlp_files / "mlp.onnx"), target="interp", **kw)


def test_calibration_feeds_split_into_the_model_batch(mlp_files):
    g = irgraph.to_graph(str(mlp_files / "mlp.onnx"))       # static batch 2
    feeds = calibration_feeds(g, str(mlp_files / "calib.npz"))
    assert len(feeds) == 4 and all(f["x"].shape == (2, 16) for f in feeds)
    assert len(calibration_feeds(g, [{"x": np.zeros((2, 16), np.float32)}] * 3)) == 3
    q = QuantOptions.parse(g, "int8", str(mlp_files / "calib.npz"), "auto", "entropy")
    assert q.pass_options()["quantize.observer"] == "entropy" and q.keep_float == "auto"
    assert QuantOptions.parse(g) is None
    names = plan_passes(["fold_constants", "fuse_epilogues", "plan_memory"], g, q)
    assert names == ["fold_constants", "quantize_static", "fold_qdq", "fuse_quantized_elementwise",
                     "fuse_epilogues", "plan_memory"]


def test_cli_compile_run_and_show(mlp_files, capsys, tmp_path):
    model, calib = str(mlp_files / "mlp.onnx"), str(mlp_files / "calib.npz")
    out = tmp_path / "mlp.irg"
    assert main(["compile", model, "--quantize", "int8", "--calibrate", calib, "--observer", "percentile",
                 "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 of 2 layers quantized" in text and "compiled int8 model" in text
    assert main(["run", str(out)]) == 0
    assert "logits: float32[2, 4]" in capsys.readouterr().out
    assert main(["show", model, "-O2", "--no-ir", "--stats", "--quantize", "int8", "--calibrate", calib,
                 "--keep-float", "Gemm_4"]) == 0
    text = capsys.readouterr().out
    assert "quantize_static" in text and "fold_qdq" in text            # the pass table
    assert "1 of 2 layers quantized" in text and "float (keep_float)" in text
    assert main(["show", model, "--no-ir", "--quantize", "dynamic"]) == 0
    assert "no accuracy report" in capsys.readouterr().out


@pytest.mark.parametrize("args,match", [
    (["--quantize", "int16"], "unknown quantization"),
    (["--quantize", "int8"], "needs calibration data"),
    (["--calibrate", "x.npz"], "without quantize"),
    (["--quantize", "int8", "--calibrate", "missing.npz"], "does not exist"),
    (["--quantize", "dynamic", "--observer", "entropy"], "dynamic quantization takes no"),
])
def test_cli_bad_flags_exit_nonzero_with_one_line(mlp_files, capsys, args, match):
    assert main(["show", str(mlp_files / "mlp.onnx"), "--no-ir", *args]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("irgraph: error:") and match in err and "\n" not in err


def test_cli_bench_quantized(mlp_files, capsys):
    assert main(["bench", str(mlp_files / "mlp.onnx"), "--quantize", "dynamic", "--repeat", "3",
                 "--warmup", "1", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "int8 speedup over fp32" in text and "irgraph int8" in text and "irgraph fp32" in text
    assert main(["bench", str(mlp_files / "mlp.onnx"), "--quantize", "dynamic", "--compare", "onnxruntime"]) == 1
