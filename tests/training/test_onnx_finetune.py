"""Fine-tuning imported ONNX models: an MLP and a CNN (with BatchNormalization) built with
onnx.helper are trained through ``Trainer(onnx_model, ...)`` (their float initializers become
the parameters; batch-norm statistics stay fixed), the loss goes down, and the trained model
exported back to ONNX gives, in onnxruntime, what the trainer predicts."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from irgraph.frontends.onnx import import_model
from irgraph.frontends.onnx.export_standard import exported_ops
from irgraph.training import Adam, Trainable, Trainer

rng = np.random.default_rng(0)


def _init(name, *shape, scale=None):
    a = rng.standard_normal(shape) * (scale if scale is not None else 1 / np.sqrt(np.prod(shape[1:]) or 1))
    return numpy_helper.from_array(a.astype(np.float32), name)


def onnx_mlp() -> onnx.ModelProto:
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1, name="fc1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], transB=1, name="fc2")]
    inits = [_init("w1", 16, 10), _init("b1", 16, scale=0.1), _init("w2", 3, 16), _init("b2", 3, scale=0.1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def onnx_cnn() -> onnx.ModelProto:
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["bn"], name="bn"),
             helper.make_node("Relu", ["bn"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1, name="fc")]
    stats = [numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) * 0.1, "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), "var")]
    inits = [_init("cw", 4, 1, 3, 3), _init("cb", 4, scale=0.1),
             numpy_helper.from_array(np.ones(4, np.float32), "scale"),
             numpy_helper.from_array(np.zeros(4, np.float32), "shift"), *stats,
             _init("fw", 3, 36), _init("fb", 3, scale=0.1)]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 6, 6])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def dataset(shape, n=96, seed=1):
    """Labels: which third of the features (of the image's rows) has the largest mean."""
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, *shape)).astype(np.float32)
    thirds = np.stack([part.mean(1) for part in np.array_split(x.reshape(n, -1), 3, axis=1)], 1)
    return x, thirds.argmax(1).astype(np.int64)


def ort_run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


MODELS = {"mlp": (onnx_mlp, (10,)), "cnn": (onnx_cnn, (1, 6, 6))}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fine_tune_and_export_back(name, tmp_path):
    build, shape = MODELS[name]
    proto = build()
    x, y = dataset(shape)
    t = Trainer(proto, "sparse_cross_entropy", Adam(0.01), target="cpu", num_threads=1)
    expected = {"mlp": {"w1", "b1", "w2", "b2"}, "cnn": {"cw", "cb", "scale", "shift", "fw", "fb"}}[name]
    assert set(t.params) == expected                   # running statistics are not parameters
    np.testing.assert_allclose(t.predict(x), ort_run(proto, x), rtol=1e-4, atol=1e-5)
    before = t.evaluate(x, y)["loss"]
    t.fit(x, y, epochs=8, batch_size=16, verbose=False)
    after = t.evaluate(x, y)["loss"]
    assert after < 0.7 * before
    out = t.export_onnx(tmp_path / "tuned.onnx")
    assert set(exported_ops(out)) == {""}
    tuned = onnx.load(str(tmp_path / "tuned.onnx"))
    got = ort_run(tuned, x)
    np.testing.assert_allclose(got, t.predict(x), rtol=1e-4, atol=1e-5)
    assert not np.allclose(got, ort_run(proto, x), atol=1e-3)   # the weights did change
    if name == "cnn":
        inits = {i.name: numpy_helper.to_array(i) for i in tuned.graph.initializer}
        for stat in ("mean", "var"):
            kept = [a for a in inits.values() if a.shape == (4,) and np.array_equal(
                a, numpy_helper.to_array(next(i for i in proto.graph.initializer if i.name == stat)))]
            assert kept, f"running {stat} changed"


def test_fine_tune_only_the_chosen_initializers():
    proto = onnx_mlp()
    x, y = dataset((10,))
    t = Trainer(proto, "sparse_cross_entropy", Adam(0.01), trainable=["w2", "b2"])
    assert set(t.params) == {"w2", "b2"}
    start = t.predict(x)
    t.fit(x, y, epochs=3, batch_size=16, verbose=False)
    inits = {i.name: numpy_helper.to_array(i) for i in t.export_onnx().graph.initializer}
    original = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    w1 = [a for a in inits.values() if a.shape == (16, 10) or a.shape == (10, 16)]
    assert any(np.array_equal(a, original["w1"]) or np.array_equal(a, original["w1"].T) for a in w1)
    assert not np.allclose(t.predict(x), start)


def test_interp_and_cpu_agree_on_an_imported_model():
    # the importer evaluates small nodes on constants (Gemm's transposed weight, BatchNorm's
    # scale / sqrt(var + eps)); once those constants are parameters, no such value may survive,
    # or constant folding on the cpu pipeline bakes the starting weights into every step
    proto = onnx_cnn()
    x, y = dataset((1, 6, 6))
    losses = {}
    for target in ("interp", "cpu"):
        t = Trainer(proto, "sparse_cross_entropy", Adam(0.01), target=target,
                    **({"num_threads": 1} if target == "cpu" else {}))
        losses[target] = [t.train_step(x[i:i + 16], y[i:i + 16])[0] for i in range(0, 96, 16)]
    np.testing.assert_allclose(losses["cpu"], losses["interp"], rtol=2e-5)


def test_no_compile_time_value_depends_on_a_parameter():
    tm = Trainable.from_graph(import_model(onnx_cnn()))
    g = tm.train_graph
    params = {v for v in g.inputs if v.name in tm.params}
    depends = set(params)
    for n in g.nodes:
        if any(v in depends for v in n.inputs if v is not None):
            depends.update(n.outputs)
    known = [v.name for v in depends if "value" in v.meta]
    assert not known
