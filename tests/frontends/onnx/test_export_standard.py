"""Standard-ONNX export: DSL models written as default-domain ONNX ops run in onnxruntime with
the interpreter's results, read back through our importer, and ops with no standard form are
decomposed, left in the ai.irgraph domain, or (strict) refused by name."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import irgraph
from irgraph.errors import IrgraphError
from irgraph.frontends import dsl
from irgraph.frontends.dsl import functional as F
from irgraph.frontends.onnx import import_model
from irgraph.frontends.onnx.export_standard import export_standard, exported_ops

rng = np.random.default_rng(5)


def _ort(proto, feeds):
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


class Encoder(dsl.Module):
    def __init__(self):
        super().__init__()
        self.emb = dsl.Embedding(11, 8)
        self.enc = dsl.TransformerEncoderLayer(8, 2, 16, activation="gelu")
        self.lstm = dsl.LSTM(4, return_sequences=True, bidirectional=True)
        self.gru = dsl.GRU(3)
        self.head = dsl.Dense(2)

    def forward(self, ids):
        return F.softmax(self.head(self.gru(self.lstm(self.enc(self.emb(ids))))))


CASES = {
    "cnn": (lambda: dsl.Sequential(dsl.Conv2D(4, 3, padding="same"), dsl.BatchNorm(), dsl.ReLU(),
                                   dsl.MaxPool2D(), dsl.Conv2D(4, 3, strides=2, padding="same"),
                                   dsl.LeakyReLU(0.1), dsl.AvgPool2D(2, padding="same"), dsl.Flatten(),
                                   dsl.Dropout(0.5), dsl.Dense(8, activation="sigmoid"), dsl.LayerNorm(),
                                   dsl.Dense(3), dsl.Softmax()),
            [(None, 1, 9, 9)], lambda: rng.standard_normal((2, 1, 9, 9)).astype(np.float32)),
    "encoder": (Encoder, [((None, 6), "int64")], lambda: rng.integers(0, 11, (3, 6))),
    "global_pool_mlp": (lambda: dsl.Sequential(dsl.Conv2D(3, 1), dsl.Tanh(), dsl.GlobalAvgPool(),
                                               dsl.Linear(3, 2), dsl.GELU("tanh")),
                        [(None, 2, 4, 4)], lambda: rng.standard_normal((2, 2, 4, 4)).astype(np.float32)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_dsl_models_run_in_onnxruntime(name, tmp_path):
    make, specs, data = CASES[name]
    m = make()
    m.initialize(seed=3, input_specs=specs)
    bn = [p for n, p in m.named_parameters(include_buffers=True) if "running" in n]
    for p in bn:   # non-trivial running statistics
        p.value = np.abs(rng.standard_normal(p.shape)).astype(np.float32) + 0.5
    path = tmp_path / f"{name}.onnx"
    proto = m.export_onnx(path, specs)
    assert path.read_bytes() == proto.SerializeToString()
    assert set(exported_ops(proto)) == {""}                # standard ONNX only
    assert [o.domain for o in proto.opset_import] == [""]
    onnx.checker.check_model(proto, full_check=True)
    x = data()
    want = m(x)
    (got,) = _ort(proto, {proto.graph.input[0].name: x})
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # and our importer reads the standard model back to the same function
    back = irgraph.compile(import_model(proto))
    np.testing.assert_allclose(back(x), want, rtol=1e-5, atol=1e-6)


def test_attention_exports_as_attention_23_or_decomposes():
    m = dsl.MultiHeadAttention(4, 2)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    proto = m.export_onnx(None, [(None, 3, 4)])
    assert "Attention" in exported_ops(proto)[""] and proto.opset_import[0].version == 23
    np.testing.assert_allclose(_ort(proto, {"query": x})[0], m(x), rtol=1e-5, atol=1e-6)
    # opset 21 has no Attention: the registry decomposition (it needs static shapes) is written
    proto21 = m.export_onnx(None, [(2, 3, 4)], opset=21)
    ops = exported_ops(proto21)[""]
    assert "Attention" not in ops and {"MatMul", "Softmax"} <= ops and proto21.opset_import[0].version == 21
    np.testing.assert_allclose(_ort(proto21, {"query": x})[0], m(x), rtol=1e-5, atol=1e-6)
    # with a symbolic batch it cannot decompose: the node stays in the irgraph domain
    assert exported_ops(m.export_onnx(None, [(None, 3, 4)], opset=21))["ai.irgraph"] == {"attention"}


def test_ops_without_a_standard_form():
    def f(x):
        return F.swiglu(x, x) + F.mod(x, 0.5) + F.swish(x)   # float Mod needs fmod=1; Swish is opset 24
    g = dsl.trace(f, [(2, 3)]).graph
    proto = export_standard(g)
    ops = exported_ops(proto)
    assert ops["ai.irgraph"] == {"swiglu", "mod", "swish"} and "Add" in ops[""]
    assert {o.domain for o in proto.opset_import} == {"", "ai.irgraph"}
    x = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(irgraph.compile(import_model(proto))(x), irgraph.compile(g)(x), rtol=1e-6)
    with pytest.raises(IrgraphError, match="no standard ONNX form for op.*mod, swiglu, swish"):
        export_standard(g, strict=True)
    assert "Swish" in exported_ops(export_standard(g, opset=24))[""]
    with pytest.raises(IrgraphError, match="opset 21 or newer"):
        export_standard(g, opset=17)


def test_rnn_activations_map_to_onnx_names():
    def f(x):
        w, r = np.ones((1, 9, 2), np.float32) * 0.1, np.ones((1, 9, 3), np.float32) * 0.1
        y, h = F.gru(x, w, r, activations=["hardsigmoid", "relu"])
        return h
    g = dsl.trace(f, [(4, 1, 2)]).graph
    proto = export_standard(g)
    (node,) = [n for n in proto.graph.node if n.op_type == "GRU"]
    acts = [a for a in node.attribute if a.name == "activations"][0].strings
    assert acts == [b"HardSigmoid", b"Relu"]
    x = rng.standard_normal((4, 1, 2)).astype(np.float32)
    np.testing.assert_allclose(_ort(proto, {"x": x})[0], irgraph.compile(g)(x), rtol=1e-5, atol=1e-6)
