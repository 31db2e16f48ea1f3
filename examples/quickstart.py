"""Quick start: build a small CNN as an ONNX model in code, look at it, compile it, run it.

    python examples/quickstart.py [--out DIR]

Nothing is downloaded; the model is written with onnx.helper and fixed-seed weights.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import irgraph


def build_cnn(seed: int = 0) -> onnx.ModelProto:
    """conv3x3(8) -> relu -> maxpool -> conv3x3(16) -> relu -> global avg pool -> linear(10) -> softmax"""
    rng = np.random.default_rng(seed)

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["image", "c1.w", "c1.b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        helper.make_node("Conv", ["p1", "c2.w", "c2.b"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
    ]
    inits = [w("c1.w", 8, 3, 3, 3), w("c1.b", 8), w("c2.w", 16, 8, 3, 3), w("c2.b", 16),
             w("fc.w", 10, 16), w("fc.b", 10)]
    graph = helper.make_graph(nodes, "quickstart_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder to write quickstart.onnx into (default: a temp folder)")
    args = ap.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="irgraph-quickstart-")
    path = os.path.join(out, "quickstart.onnx")
    onnx.save(build_cnn(), path)
    print(f"wrote {path}")

    model = irgraph.compile(path, target="interp")
    print(model)
    print(f"ops: {dict(model.graph.op_histogram())}, parameters: {model.graph.parameter_count():,}")

    images = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    probs = model(images)
    print("predicted classes:", probs.argmax(axis=1).tolist())
    print("row sums (softmax, should be 1):", np.round(probs.sum(axis=1), 6).tolist())
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # the same model optimized (-O2: BatchNorm folding, fusion, memory planning) and compiled to
    # native code for this CPU through LLVM; the interpreter above is its oracle
    t0 = time.perf_counter()
    native = irgraph.compile(path, target="cpu", opt_level=2)
    native(images)  # first call compiles the kernels for this batch size
    print(f"compiled for cpu in {time.perf_counter() - t0:.2f} s: {native.pass_report.kernels_before} ops "
          f"-> {native.pass_report.kernels_after} kernels")
    fast = native(images)
    print(f"max |cpu - interp| = {np.abs(fast - probs).max():.2e}")
    assert np.allclose(fast, probs, rtol=1e-4, atol=1e-5)
    for name, m in (("interp", model), ("cpu", native)):
        times = []
        for _ in range(20):
            t0 = time.perf_counter()
            m(images)
            times.append(time.perf_counter() - t0)
        print(f"{name:>6}: median {1e3 * sorted(times)[len(times) // 2]:.3f} ms per batch of 4")
    print(f"next: irgraph show {path} -O2 --stats   |   irgraph bench {path} --target cpu --compare onnxruntime")


if __name__ == "__main__":
    main()
