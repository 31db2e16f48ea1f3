"""The CLI: --version, show, run (with .npz inputs or seeded random ones), one-line errors."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

import irgraph
import models


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "irgraph", *args], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.fixture
def mlp_path(tmp_path):
    p = tmp_path / "mlp.onnx"
    onnx.save(models.mlp(sizes=(8, 16, 4)), p)
    return p


def test_version():
    r = _cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"irgraph {irgraph.__version__}"


def test_show_prints_ir_histogram_params_and_signature(mlp_path):
    r = _cli("show", str(mlp_path))
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "graph mlp(%x: float32[N,8])" in out
    assert "matmul" in out and "relu" in out
    assert "parameters: 212" in out  # 8*16+16 + 16*4+4
    assert "logits: float32[N,4]" in out


def test_show_json(mlp_path):
    r = _cli("show", str(mlp_path), "--json")
    s = json.loads(r.stdout)
    assert s["parameters"] == 212
    assert s["inputs"] == [{"name": "x", "type": "float32[N,8]"}]
    assert s["ops"]["relu"] == 1


def test_run_with_inputs_writes_outputs_atomically(mlp_path, tmp_path):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    out = tmp_path / "out.npz"
    r = _cli("run", str(mlp_path), "--inputs", str(tmp_path / "in.npz"), "--output", str(out))
    assert r.returncode == 0, r.stderr
    want = irgraph.compile(str(mlp_path))(x)
    with np.load(out) as z:
        assert list(z.files) == ["logits"]
        np.testing.assert_allclose(z["logits"], want, rtol=1e-6)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_run_with_random_inputs_and_dims(mlp_path):
    r = _cli("run", str(mlp_path), "--dim", "N=5", "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert "logits: float32[5, 4]" in r.stdout


@pytest.mark.parametrize("args,words", [
    (["run", "MODEL", "--inputs", "missing.npz"], ["does not exist"]),
    (["run", "MODEL", "--inputs", "BAD_KEYS"], ["missing inputs ['x']", "unknown keys ['y']"]),
    (["run", "MODEL", "--inputs", "BAD_SHAPE"], ["input 'x'", "wrong shape"]),
    (["run", "MODEL", "--target", "tpu"], ["unknown target 'tpu'"]),
    (["run", "MODEL", "--dim", "N"], ["NAME=SIZE"]),
    (["show", "nope.onnx"], ["does not exist"]),
    (["run", "MODEL", "--output", "no/such/dir/out.npz"], ["does not exist"]),
])
def test_errors_are_one_line_and_nonzero(mlp_path, tmp_path, args, words):
    np.savez(tmp_path / "bad_keys.npz", y=np.zeros((1, 8), np.float32))
    np.savez(tmp_path / "bad_shape.npz", x=np.zeros((1, 9), np.float32))
    sub = {"MODEL": str(mlp_path), "BAD_KEYS": str(tmp_path / "bad_keys.npz"),
           "BAD_SHAPE": str(tmp_path / "bad_shape.npz")}
    r = _cli(*[sub.get(a, a) for a in args], cwd=tmp_path)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irgraph: error:"), r.stderr
    for w in words:
        assert w in lines[0]


def test_bad_flag_is_usage_error():
    r = _cli("run", "--frobnicate")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "irgraph: error:" in r.stderr


def test_existing_output_survives_a_failed_run(mlp_path, tmp_path):
    out = tmp_path / "out.npz"
    out.write_bytes(b"precious")
    np.savez(tmp_path / "bad.npz", x=np.zeros((1, 9), np.float32))
    r = _cli("run", str(mlp_path), "--inputs", str(tmp_path / "bad.npz"), "--output", str(out))
    assert r.returncode != 0
    assert out.read_bytes() == b"precious"
