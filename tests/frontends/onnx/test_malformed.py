"""Malformed models give one clear IrgraphError (and a non-zero, one-line CLI exit); none crashes
or reads outside the model's folder."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import irgraph
from irgraph.errors import IrgraphError, ModelImportError


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "m", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "irgraph", *args], capture_output=True, text=True, timeout=120)


def _good():
    return _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x", [2, 3])], [_vi("y", [2, 3])])


def _assert_cli_error(path, words):
    r = _cli("show", str(path))
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def _assert_refused(tmp_path, m, error, api_words, cli_words):
    """Compiling ``m`` raises ``error`` naming every one of ``api_words``; ``irgraph show`` on the
    saved file fails with one line naming ``cli_words``."""
    with pytest.raises(error) as e:
        irgraph.compile(m)
    for w in api_words:
        assert w in str(e.value), str(e.value)
    p = tmp_path / "model.onnx"
    onnx.save(m, p)
    _assert_cli_error(p, cli_words)


def test_truncated_file(tmp_path):
    data = _good().SerializeToString()
    p = tmp_path / "t.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelImportError, match="truncated|corrupt|no graph"):
        irgraph.compile(str(p))
    _assert_cli_error(p, ["irgraph: error:"])


def test_garbage_and_empty_files(tmp_path):
    p = tmp_path / "g.onnx"
    p.write_bytes(b"\xff\xfe not a protobuf at all \x00\x01" * 10)
    with pytest.raises(ModelImportError):
        irgraph.compile(str(p))
    e = tmp_path / "e.onnx"
    e.write_bytes(b"")
    with pytest.raises(ModelImportError, match="empty"):
        irgraph.compile(str(e))


def test_cycle(tmp_path):
    m = _model([helper.make_node("Relu", ["b"], ["a"], name="n1"),
                helper.make_node("Relu", ["a"], ["b"], name="n2")], [_vi("x", [2])], [_vi("b", [2])])
    _assert_refused(tmp_path, m, ModelImportError, ["cycle", "n1", "n2"], ["cycle"])


def test_dangling_input(tmp_path):
    m = _model([helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")], [_vi("x", [2])], [_vi("y", [2])])
    _assert_refused(tmp_path, m, ModelImportError, ["ghost", "adder"], ["ghost"])


def test_wrong_attribute_type(tmp_path):
    shape = numpy_helper.from_array(np.array([3, 2], np.int64), "s")
    m = _model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs", allowzero="yes")],
               [_vi("x", [2, 3])], [_vi("y", [3, 2])], [shape])
    _assert_refused(tmp_path, m, IrgraphError, ["allowzero", "'rs'", "int"], ["allowzero"])


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_cannot_escape_the_model_folder(tmp_path, location):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.arange(6, dtype=np.float32).tobytes())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    w = TensorProto()
    w.name = "w"
    w.data_type = TensorProto.FLOAT
    w.dims.extend([2, 3])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "24")):
        e = w.external_data.add()
        e.key, e.value = k, v
    m = _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x", [2, 3])], [_vi("y", [2, 3])], [w])
    p = model_dir / "m.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelImportError, match="escapes the model's folder"):
        irgraph.compile(str(p))
    _assert_cli_error(p, ["escapes"])


def test_external_data_inside_the_folder_loads(tmp_path):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8 + arr.tobytes())
    w = TensorProto()
    w.name, w.data_type = "w", TensorProto.FLOAT
    w.dims.extend([2, 3])
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "weights.bin"), ("offset", "8"), ("length", "24")):
        e = w.external_data.add()
        e.key, e.value = k, v
    m = _model([helper.make_node("Add", ["x", "w"], ["y"], name="add")], [_vi("x", [2, 3])], [_vi("y", [2, 3])], [w])
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    y = irgraph.compile(str(p))(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(y, arr + 1)


def test_external_data_past_end_of_file(tmp_path):
    (tmp_path / "w.bin").write_bytes(b"\0" * 10)
    w = TensorProto()
    w.name, w.data_type = "w", TensorProto.FLOAT
    w.dims.extend([2, 3])
    w.data_location = TensorProto.EXTERNAL
    e = w.external_data.add()
    e.key, e.value = "location", "w.bin"
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], [_vi("x", [2, 3])], [_vi("y", [2, 3])], [w])
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    with pytest.raises(ModelImportError, match="does not match|past the end"):
        irgraph.compile(str(p))


def test_huge_declared_shape(tmp_path):
    m = _model([helper.make_node("Relu", ["x"], ["y"], name="r")], [_vi("x", [2 ** 20, 2 ** 20])], [_vi("y", None)])
    _assert_refused(tmp_path, m, ModelImportError, ["limit"], ["elements"])


def test_huge_initializer_shape_is_refused_before_allocation():
    t = TensorProto()
    t.name, t.data_type = "w", TensorProto.FLOAT
    t.dims.extend([2 ** 20, 2 ** 20])
    m = _model([helper.make_node("Relu", ["w"], ["y"])], [], [_vi("y", None)], [t])
    with pytest.raises(ModelImportError, match="elements"):
        irgraph.compile(m)


def test_unsupported_ops_are_listed_all_at_once():
    m = _model([helper.make_node("FancyOp", ["x"], ["a"], name="f1", domain="com.example"),
                helper.make_node("FancyOp", ["a"], ["b"], name="f2", domain="com.example"),
                helper.make_node("OtherOp", ["b"], ["y"], name="o1", domain="com.example")],
               [_vi("x", [2])], [_vi("y", [2])])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(irgraph.UnsupportedOpError) as e:
        irgraph.compile(m)
    msg = str(e.value)
    assert "2 unsupported operator(s)" in msg
    for w in ("com.example::FancyOp", "com.example::OtherOp", "'f1'", "'f2'", "'o1'", "opset 1"):
        assert w in msg


def test_sequence_inputs_are_refused_clearly():
    seq = helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, [2])
    m = _model([helper.make_node("Identity", ["s"], ["y"])], [seq], [_vi("y", [2])])
    with pytest.raises(ModelImportError, match="sequence"):
        irgraph.compile(m)
