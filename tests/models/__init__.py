"""Test models built in code with fixed seeds (nothing is downloaded).

Each builder returns an ``onnx.ModelProto`` written the way exporters write models (Gemm,
Conv+BatchNormalization, attention spelled out op by op with Shape arithmetic, LSTM), so the
importer and later passes see realistic graphs.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


class _Builder:
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self._n = 0

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def weight(self, shape, scale=None, name="w") -> str:
        fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
        scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
        arr = (self.rng.standard_normal(shape) * scale).astype(np.float32)
        return self.const(arr, name)

    def const(self, arr, name="c") -> str:
        n = self.name(name)
        self.inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def node(self, op, inputs, n_out=1, **attrs):
        outs = [self.name(op.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.name(op), **attrs))
        return outs[0] if n_out == 1 else outs

    def model(self, inputs, outputs, name) -> onnx.ModelProto:
        g = helper.make_graph(self.nodes, name, inputs, outputs, self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="irgraph-tests")
        m.ir_version = 8
        return m


def _rename_output(b: _Builder, value: str, name: str) -> str:
    b.nodes.append(helper.make_node("Identity", [value], [name], name=b.name("out")))
    return name


def mlp(sizes=(784, 512, 512, 10), batch="N", seed=0) -> onnx.ModelProto:
    """Gemm + Relu layers, the way PyTorch exports nn.Linear stacks."""
    b = _Builder(seed)
    x = "x"
    for i, (fi, fo) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = b.weight((fo, fi), name=f"fc{i}.weight")
        bias = b.weight((fo,), scale=0.1, name=f"fc{i}.bias")
        x = b.node("Gemm", [x, w, bias], transB=1)
        if i < len(sizes) - 2:
            x = b.node("Relu", [x])
    y = _rename_output(b, x, "logits")
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, sizes[0]])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, sizes[-1]])], "mlp")


def _conv_bn(b: _Builder, x, cin, cout, k, stride, relu=True):
    w = b.weight((cout, cin, k, k), name="conv.weight")
    y = b.node("Conv", [x, w], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
    scale = b.const((1.0 + 0.1 * b.rng.standard_normal(cout)).astype(np.float32), "bn.weight")
    bias = b.const((0.1 * b.rng.standard_normal(cout)).astype(np.float32), "bn.bias")
    mean = b.const((0.1 * b.rng.standard_normal(cout)).astype(np.float32), "bn.running_mean")
    var = b.const((0.5 + b.rng.random(cout)).astype(np.float32), "bn.running_var")
    y = b.node("BatchNormalization", [y, scale, bias, mean, var], epsilon=1e-5)
    return b.node("Relu", [y]) if relu else y


def resnet(widths=(16, 32, 64), blocks=1, image=32, classes=10, batch="N", seed=1,
           imagenet_stem=False, name="resnet") -> onnx.ModelProto:
    """A ResNet of basic blocks with residual adds and global pooling: a CIFAR-style 3x3 stem, or
    the ImageNet 7x7/2 conv + 3x3/2 max-pool stem."""
    b = _Builder(seed)
    if imagenet_stem:
        x = _conv_bn(b, "x", 3, widths[0], 7, 2)
        x = b.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    else:
        x = _conv_bn(b, "x", 3, widths[0], 3, 1)
    cin = widths[0]
    for si, w in enumerate(widths):
        for bi in range(blocks):
            stride = 2 if si > 0 and bi == 0 else 1
            y = _conv_bn(b, x, cin, w, 3, stride)
            y = _conv_bn(b, y, w, w, 3, 1, relu=False)
            sc = x if stride == 1 and cin == w else _conv_bn(b, x, cin, w, 1, stride, relu=False)
            x = b.node("Relu", [b.node("Add", [y, sc])])
            cin = w
    x = b.node("GlobalAveragePool", [x])
    x = b.node("Flatten", [x], axis=1)
    x = b.node("Gemm", [x, b.weight((classes, cin), name="fc.weight"), b.weight((classes,), 0.1, "fc.bias")], transB=1)
    y = _rename_output(b, x, "logits")
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, image, image])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, classes])], name)


def resnet18(image=224, classes=1000, batch="N", seed=4) -> onnx.ModelProto:
    """ResNet-18: ImageNet stem, four stages of two basic blocks (64, 128, 256, 512 channels)."""
    return resnet(widths=(64, 128, 256, 512), blocks=2, image=image, classes=classes, batch=batch,
                  seed=seed, imagenet_stem=True, name="resnet18")


def _layer_norm_decomposed(b: _Builder, x, hidden):
    """LayerNorm spelled out op by op (ReduceMean/Sub/Pow/Sqrt/Div) as older exporters write it."""
    axes = b.const(np.array([-1], np.int64), "axes")
    mean = b.node("ReduceMean", [x, axes], keepdims=1)
    d = b.node("Sub", [x, mean])
    var = b.node("ReduceMean", [b.node("Pow", [d, b.const(np.array(2.0, np.float32), "two")]), axes], keepdims=1)
    std = b.node("Sqrt", [b.node("Add", [var, b.const(np.array(1e-5, np.float32), "eps")])])
    y = b.node("Div", [d, std])
    return b.node("Add", [b.node("Mul", [y, b.const(np.ones(hidden, np.float32), "ln.weight")]),
                          b.const(np.zeros(hidden, np.float32), "ln.bias")])


def bert_layer(hidden=64, heads=4, ffn=128, seq="S", batch="N", seed=2) -> onnx.ModelProto:
    """One post-LN transformer encoder layer with attention, masks, GELU (Erf) and Shape arithmetic."""
    return bert_encoder(layers=1, hidden=hidden, heads=heads, ffn=ffn, seq=seq, batch=batch, seed=seed,
                        name="bert_layer")


def bert_encoder(layers=4, hidden=256, heads=4, ffn=None, seq="S", batch="N", seed=5,
                 name="bert_encoder") -> onnx.ModelProto:
    """A BERT-style encoder: ``layers`` post-LN layers (defaults: hidden 256, 4 heads, FFN 4x)."""
    b = _Builder(seed)
    ffn = ffn or 4 * hidden
    x = "x"
    for _ in range(layers):
        x = _encoder_layer(b, x, hidden, heads, ffn)
    y = _rename_output(b, x, "hidden_states")
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, seq, hidden]),
                    helper.make_tensor_value_info("mask", TensorProto.INT64, [batch, seq])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, seq, hidden])], name)


def _encoder_layer(b: _Builder, x: str, hidden: int, heads: int, ffn: int) -> str:
    hd = hidden // heads

    def linear(inp, fi, fo, name):
        return b.node("Add", [b.node("MatMul", [inp, b.weight((fi, fo), name=f"{name}.weight")]),
                              b.weight((fo,), 0.02, f"{name}.bias")])

    shape = b.node("Shape", [x])
    n = b.node("Gather", [shape, b.const(np.array(0, np.int64), "i0")], axis=0)
    s = b.node("Gather", [shape, b.const(np.array(1, np.int64), "i1")], axis=0)
    unsq = lambda v: b.node("Unsqueeze", [v, b.const(np.array([0], np.int64), "ax0")])  # noqa: E731
    heads_shape = b.node("Concat", [unsq(n), unsq(s), b.const(np.array([heads, hd], np.int64), "hh")], axis=0)

    def split_heads(v):
        return b.node("Transpose", [b.node("Reshape", [v, heads_shape])], perm=[0, 2, 1, 3])

    q = split_heads(linear(x, hidden, hidden, "q"))
    k = split_heads(linear(x, hidden, hidden, "k"))
    v = split_heads(linear(x, hidden, hidden, "v"))
    scores = b.node("Div", [b.node("MatMul", [q, b.node("Transpose", [k], perm=[0, 1, 3, 2])]),
                            b.const(np.array(np.sqrt(hd), np.float32), "scale")])
    # additive mask from a 0/1 attention mask input: (1 - m) * -10000
    m = b.node("Cast", [b.node("Unsqueeze", [b.node("Unsqueeze", ["mask", b.const(np.array([1], np.int64), "ax1")]),
                                             b.const(np.array([1], np.int64), "ax1b")])], to=TensorProto.FLOAT)
    neg = b.node("Mul", [b.node("Sub", [b.const(np.array(1.0, np.float32), "one"), m]),
                         b.const(np.array(-10000.0, np.float32), "big")])
    probs = b.node("Softmax", [b.node("Add", [scores, neg])], axis=-1)
    ctxv = b.node("Transpose", [b.node("MatMul", [probs, v])], perm=[0, 2, 1, 3])
    merged_shape = b.node("Concat", [unsq(n), unsq(s), b.const(np.array([hidden], np.int64), "hid")], axis=0)
    ctxv = b.node("Reshape", [ctxv, merged_shape])
    x1 = _layer_norm_decomposed(b, b.node("Add", [linear(ctxv, hidden, hidden, "o"), x]), hidden)
    h = linear(x1, hidden, ffn, "ffn1")
    # GELU with Erf: 0.5 * h * (1 + erf(h / sqrt(2)))
    g = b.node("Mul", [b.node("Mul", [h, b.const(np.array(0.5, np.float32), "half")]),
                       b.node("Add", [b.node("Erf", [b.node("Div", [h, b.const(np.array(np.sqrt(2.0), np.float32), "sqrt2")])]),
                                      b.const(np.array(1.0, np.float32), "one1")])])
    out = b.node("LayerNormalization", [b.node("Add", [linear(g, ffn, hidden, "ffn2"), x1]),
                                        b.const(np.ones(hidden, np.float32), "ln2.weight"),
                                        b.const(np.zeros(hidden, np.float32), "ln2.bias")], axis=-1, epsilon=1e-5)
    return out


def lstm(input_size=16, hidden=32, classes=5, seq=7, batch="N", seed=3) -> onnx.ModelProto:
    """An LSTM over a sequence followed by a classifier on the last hidden state."""
    b = _Builder(seed)
    W = b.weight((1, 4 * hidden, input_size), name="lstm.W")
    R = b.weight((1, 4 * hidden, hidden), name="lstm.R")
    B = b.weight((1, 8 * hidden), 0.1, "lstm.B")
    _, y_h, _ = b.node("LSTM", ["x", W, R, B], n_out=3, hidden_size=hidden)
    last = b.node("Squeeze", [y_h, b.const(np.array([0], np.int64), "ax0")])
    logits = b.node("Gemm", [last, b.weight((classes, hidden), name="fc.weight"), b.weight((classes,), 0.1, "fc.bias")], transB=1)
    y = _rename_output(b, logits, "logits")
    return b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [seq, batch, input_size])],
                   [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, classes])], "lstm")


def feeds(model: onnx.ModelProto, dims: dict[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs for a model; symbolic dims from ``dims`` (default 2)."""
    rng = np.random.default_rng(seed)
    dims = dims or {}
    out = {}
    for vi in model.graph.input:
        if vi.name in {t.name for t in model.graph.initializer}:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else dims.get(d.dim_param, 2) for d in tt.shape.dim]
        np_dt = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if np.issubdtype(np_dt, np.floating):
            out[vi.name] = rng.standard_normal(shape).astype(np_dt)
        elif vi.name == "mask":
            m = np.ones(shape, np_dt)
            m[..., -1:] = 0
            out[vi.name] = m
        else:
            out[vi.name] = rng.integers(0, 4, shape).astype(np_dt)
    return out


ALL = {"mlp": mlp, "resnet": resnet, "bert_layer": bert_layer, "lstm": lstm}

# larger models of the benchmarks and the pass tests (sizes as in the issues)
LARGE = {"resnet18": resnet18, "bert_encoder": bert_encoder}
