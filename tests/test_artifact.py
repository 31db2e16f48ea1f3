"""Artifacts: CompiledModel.save / irgraph.load, validation of damaged artifacts, the CLI."""
from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest

import irgraph
from irgraph import artifact
from irgraph.cli import main

import models  # tests/models (conftest puts tests/ on sys.path)
from models import feeds


@pytest.fixture(scope="module")
def mlp():
    return models.mlp(sizes=(32, 64, 10))


@pytest.fixture(scope="module")
def small_resnet():
    return models.resnet(widths=(8, 16), blocks=1, image=16, classes=5)


def _rewrite_manifest(path, **changes):
    """Edit the manifest and re-sign it, so only the edited field can trip validation."""
    p = path / artifact.MANIFEST
    m = json.loads(p.read_text())
    m.update(changes)
    m["manifest_sha256"] = artifact._manifest_digest(m)
    p.write_text(json.dumps(m))


@pytest.fixture(scope="module")
def bert_layer():
    return models.bert_layer()     # holds 0-d constants (gather indices of its shape arithmetic)


@pytest.mark.parametrize("target", ["cpu", "interp"])
@pytest.mark.parametrize("which", ["mlp", "small_resnet", "bert_layer"])
def test_round_trip_identical_outputs(tmp_path, request, target, which):
    proto = request.getfixturevalue(which)
    f = feeds(proto, {"N": 2})
    m = irgraph.compile(proto, target=target)
    want = m(**f)
    m.save(tmp_path / "m.irg")
    loaded = irgraph.load(tmp_path / "m.irg")
    got = loaded(**f)
    assert np.array_equal(got, want)
    assert loaded.target == target and loaded.opt_level == m.opt_level
    assert loaded.input_names == m.input_names and loaded.output_names == m.output_names
    names = sorted(p.relative_to(tmp_path / "m.irg").as_posix() for p in (tmp_path / "m.irg").rglob("*")
                   if p.is_file())
    assert "manifest.json" in names and "graph.onnx" in names
    assert any(n.startswith("weights/") and n.endswith(".npy") for n in names)
    if target == "cpu":
        # the program compiled for N=2 travels as object code and is loaded, not recompiled
        assert any(n.startswith("objects/") and n.endswith(".o") for n in names)
        assert loaded.artifact["objects_used"] == loaded.artifact["objects_stored"] >= 1
    else:
        assert not any(n.startswith("objects/") for n in names)
    # other sizes of the symbolic dim still work (compiled on demand)
    f3 = feeds(proto, {"N": 3}, seed=1)
    assert np.allclose(loaded(**f3), m(**f3), rtol=1e-5, atol=1e-5)


def test_load_needs_no_onnx_model(tmp_path, mlp):
    src = tmp_path / "mlp.onnx"
    onnx.save(mlp, src)
    m = irgraph.compile(str(src), target="cpu")
    f = feeds(mlp, {"N": 1})
    want = m(**f)
    m.save(tmp_path / "m.irg")
    os.unlink(src)
    assert np.array_equal(irgraph.load(tmp_path / "m.irg")(**f), want)


@pytest.fixture()
def saved_cpu(tmp_path, mlp):
    m = irgraph.compile(mlp, target="cpu")
    m(**feeds(mlp, {"N": 2}))
    path = tmp_path / "m.irg"
    m.save(path)
    return path


def _load_error(path) -> str:
    with pytest.raises(irgraph.IrgraphError) as e:
        irgraph.load(path)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_corrupted_weight_refused(saved_cpu):
    w = saved_cpu / "weights" / "000000.npy"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    msg = _load_error(saved_cpu)
    assert "weights/000000.npy" in msg and "checksum" in msg


def test_edited_manifest_refused(saved_cpu):
    p = saved_cpu / "manifest.json"
    m = json.loads(p.read_text())
    m["opt_level"] = 0
    p.write_text(json.dumps(m))
    msg = _load_error(saved_cpu)
    assert "manifest.json" in msg and "edited" in msg


def test_truncated_object_refused(saved_cpu):
    obj = next((saved_cpu / "objects").glob("*.o"))
    obj.write_bytes(obj.read_bytes()[:100])
    msg = _load_error(saved_cpu)
    assert f"objects/{obj.name}" in msg and "checksum" in msg


def test_missing_file_refused(saved_cpu):
    os.unlink(saved_cpu / "graph.onnx")
    msg = _load_error(saved_cpu)
    assert "graph.onnx" in msg and "missing" in msg


def test_wrong_format_version_refused(saved_cpu):
    _rewrite_manifest(saved_cpu, format_version=99)
    msg = _load_error(saved_cpu)
    assert "format version 99" in msg


def test_incompatible_irgraph_version_refused(saved_cpu):
    _rewrite_manifest(saved_cpu, irgraph_version="99.0.0")
    assert "99.0.0" in _load_error(saved_cpu)


def test_not_an_artifact(tmp_path):
    assert "does not exist" in _load_error(tmp_path / "nope.irg")
    (tmp_path / "empty").mkdir()
    assert "manifest.json" in _load_error(tmp_path / "empty")
    (tmp_path / "file.irg").write_text("hello")
    assert "not an irgraph artifact" in _load_error(tmp_path / "file.irg")


def test_other_host_recompiles_with_warning(saved_cpu, mlp):
    _rewrite_manifest(saved_cpu, host_cpu_key="some-other-cpu|+sse2|llvm (1, 0, 0)")
    f = feeds(mlp, {"N": 2})
    with pytest.warns(artifact.ArtifactWarning, match="another CPU"):
        m = irgraph.load(saved_cpu)
    assert m.artifact["objects_used"] == 0
    want = irgraph.compile(mlp, target="cpu")(**f)
    assert np.array_equal(m(**f), want)


def test_interrupted_save_keeps_previous_artifact(tmp_path, mlp, monkeypatch):
    path = tmp_path / "m.irg"
    f = feeds(mlp, {"N": 2})
    good = irgraph.compile(mlp, target="interp")
    want = good(**f)
    good.save(path)
    before = {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}

    other = irgraph.compile(models.mlp(sizes=(32, 16, 10), seed=7), target="interp")
    real_save = np.save
    calls = []

    def failing_save(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption mid-write")
        return real_save(*a, **k)
    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(KeyboardInterrupt):
        other.save(path)
    monkeypatch.undo()
    assert len(calls) == 3
    after = {p.name: p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before
    assert np.array_equal(irgraph.load(path)(**f), want)
    assert sorted(os.listdir(tmp_path)) == ["m.irg"]   # no temp folders left behind
    # and a completed save replaces it
    other.save(path)
    assert irgraph.load(path)(**f).shape == want.shape
    assert not np.array_equal(irgraph.load(path)(**f), want)


def test_save_refuses_to_clobber_non_artifacts(tmp_path, mlp):
    m = irgraph.compile(mlp, target="interp")
    (tmp_path / "file").write_text("precious")
    with pytest.raises(irgraph.IrgraphError, match="refusing to overwrite"):
        m.save(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "precious"
    d = tmp_path / "dir"
    d.mkdir()
    (d / "x.txt").write_text("precious")
    with pytest.raises(irgraph.IrgraphError, match="refusing to overwrite"):
        m.save(d)
    assert (d / "x.txt").read_text() == "precious"
    with pytest.raises(irgraph.IrgraphError, match="does not exist"):
        m.save(tmp_path / "no" / "m.irg")


def test_cli_compile_run_show(tmp_path, mlp, capsys):
    src, art = tmp_path / "mlp.onnx", tmp_path / "m.irg"
    onnx.save(mlp, src)
    f = feeds(mlp, {"N": 3})
    np.savez(tmp_path / "x.npz", **f)
    assert main(["compile", str(src), "--target", "cpu", "-O2", "--dim", "N=3", "-o", str(art)]) == 0
    assert "wrote" in capsys.readouterr().out
    manifest = json.loads((art / "manifest.json").read_text())
    assert [p["dims"] for p in manifest["programs"]] == [{"N": 3}]
    assert main(["run", str(art), "--inputs", str(tmp_path / "x.npz"), "--output", str(tmp_path / "y.npz")]) == 0
    want = irgraph.compile(mlp, target="cpu", opt_level=2)(**f)
    assert np.array_equal(np.load(tmp_path / "y.npz")["logits"], want)
    capsys.readouterr()
    assert main(["show", str(art)]) == 0
    out = capsys.readouterr().out
    assert "target cpu" in out and "x: float32['N', 32]" in out and "graph mlp" in out
    assert "fused" in out and "all checksums ok" in out
    # interp artifact through the CLI too
    art2 = tmp_path / "i.irg"
    assert main(["compile", str(src), "--target", "interp", "-o", str(art2)]) == 0
    assert main(["run", str(art2), "--inputs", str(tmp_path / "x.npz"), "--output", str(tmp_path / "z.npz")]) == 0
    assert np.array_equal(np.load(tmp_path / "z.npz")["logits"], irgraph.compile(mlp)(**f))


def test_cli_errors_are_one_line(tmp_path, mlp, capsys):
    src = tmp_path / "mlp.onnx"
    onnx.save(mlp, src)
    (tmp_path / "keep.txt").write_text("precious")
    assert main(["compile", str(src), "-o", str(tmp_path / "keep.txt")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refusing to overwrite" in err
    assert (tmp_path / "keep.txt").read_text() == "precious"
    assert main(["compile", str(src), "--dim", "Q=2", "-o", str(tmp_path / "a.irg")]) == 1
    assert "no symbolic dimension Q" in capsys.readouterr().err
    assert not (tmp_path / "a.irg").exists()
    art = tmp_path / "m.irg"
    assert main(["compile", str(src), "--target", "interp", "-o", str(art)]) == 0
    os.unlink(art / "graph.onnx")
    capsys.readouterr()
    assert main(["run", str(art)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "graph.onnx" in err and "missing" in err
    assert main(["show", str(art)]) == 1


def test_static_shapes_cpu_object_code_is_used(tmp_path):
    proto = models.mlp(sizes=(16, 8, 4), batch=2, seed=3)
    f = feeds(proto)
    m = irgraph.compile(proto, target="cpu")   # static: compiled at construction, never called
    m.save(tmp_path / "m.irg")
    loaded = irgraph.load(tmp_path / "m.irg")
    assert loaded.artifact["objects_used"] == 1
    assert np.array_equal(loaded(**f), m(**f))


def test_cpu_artifact_without_compiled_programs(tmp_path, mlp):
    m = irgraph.compile(mlp, target="cpu")   # symbolic N, never called: nothing compiled yet
    m.save(tmp_path / "m.irg")
    loaded = irgraph.load(tmp_path / "m.irg")
    assert loaded.artifact["objects_stored"] == 0
    f = feeds(mlp, {"N": 4})
    assert np.array_equal(loaded(**f), m(**f))


def test_cli_run_artifact_rejects_compile_flags(tmp_path, mlp, capsys):
    src, art = tmp_path / "mlp.onnx", tmp_path / "m.irg"
    onnx.save(mlp, src)
    assert main(["compile", str(src), "--target", "interp", "-o", str(art)]) == 0
    capsys.readouterr()
    assert main(["run", str(art), "--target", "cpu"]) == 1
    assert "compiled for target 'interp'" in capsys.readouterr().err
    assert main(["run", str(art), "-O2"]) == 1
    assert "already compiled" in capsys.readouterr().err
    assert main(["run", str(art), "--target", "interp", "--dim", "N=2"]) == 0
    assert "logits: float32[2, 10]" in capsys.readouterr().out
