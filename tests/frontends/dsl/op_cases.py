"""One small, valid call per registry op: ``CASES[op] = (inputs, attrs)`` (or a function of the
tracer-free ``F`` giving the result, for ops whose bodies are Python functions).

Used by test_functional.py to call every op through ``F`` and compare with its reference.
"""
from __future__ import annotations

import numpy as np

import irgraph.backends.cpu.target  # noqa: F401  (passes and backends register a few ops too)
import irgraph.passes  # noqa: F401

_rng = np.random.default_rng(0)
f32 = np.float32
i64 = np.int64


def R(*shape, lo=-1.0, hi=1.0):
    return _rng.uniform(lo, hi, shape).astype(f32)


def P(*shape):
    return _rng.uniform(0.5, 2.0, shape).astype(f32)


def I(*vals):
    return np.array(vals, i64)


A = R(2, 3)
B = R(2, 3)
U = R(2, 3, lo=-0.9, hi=0.9)
X4 = R(1, 2, 5, 5)
INT = np.array([[1, -2, 3], [4, 5, -6]], np.int32)
INT2 = np.array([[3, 1, 2], [1, 2, 2]], np.int32)
BOOL = np.array([[True, False, True], [False, False, True]])
BOOL2 = np.array([[True, True, False], [False, True, True]])

UNARY_FLOAT = ["abs", "ceil", "cos", "cosh", "erf", "exp", "floor", "neg", "relu", "round",
               "sigmoid", "sign", "sin", "sinh", "tan", "tanh", "softplus", "softsign", "hard_swish",
               "mish", "isnan", "gelu", "elu", "celu", "selu", "leaky_relu", "hard_sigmoid",
               "thresholded_relu", "shrink", "swish", "asinh", "atan", "isinf", "log_softmax",
               "softmax", "hardmax", "identity"]
CASES: dict[str, tuple] = {op: ([A], {}) for op in UNARY_FLOAT}
CASES.update({
    "acos": ([U], {}), "asin": ([U], {}), "atanh": ([U], {}), "acosh": ([P(2, 3) + 1], {}),
    "log": ([P(2, 3)], {}), "sqrt": ([P(2, 3)], {}), "reciprocal": ([P(2, 3)], {}),
    "add": ([A, B], {}), "sub": ([A, B], {}), "mul": ([A, B], {}), "div": ([A, P(2, 3)], {}),
    "pow": ([P(2, 3), B], {}), "maximum": ([A, B], {}), "minimum": ([A, B], {}),
    "mod": ([INT, INT2], {}), "equal": ([INT, INT2], {}), "greater": ([A, B], {}),
    "greater_equal": ([A, B], {}), "less": ([A, B], {}), "less_equal": ([A, B], {}),
    "logical_and": ([BOOL, BOOL2], {}), "logical_or": ([BOOL, BOOL2], {}),
    "logical_xor": ([BOOL, BOOL2], {}), "logical_not": ([BOOL], {}),
    "bitwise_and": ([INT, INT2], {}), "bitwise_or": ([INT, INT2], {}), "bitwise_xor": ([INT, INT2], {}),
    "bitwise_not": ([INT], {}), "shift_left": ([INT2.astype(np.uint8), np.uint8(1)], {}),
    "shift_right": ([INT2.astype(np.uint8), np.uint8(1)], {}),
    "where": ([BOOL, A, B], {}), "clip": ([A, f32(-0.5), f32(0.5)], {}), "prelu": ([A, R(3)], {}),
    "swiglu": ([A, B], {}), "cast": ([A], {"to": "int32"}), "bitcast": ([A], {"to": "int32"}),
    "full_like": ([A], {"value": 2.5}),
    "matmul": ([A, R(3, 4)], {}), "einsum": ([A, R(3, 4)], {"equation": "ij,jk->ik"}),
    "det": ([R(2, 3, 3)], {}),
    "reduce_sum": ([A, I(1)], {}), "reduce_mean": ([A, I(0)], {"keepdims": 0}),
    "reduce_max": ([A], {}), "reduce_min": ([A, I(1)], {}), "reduce_prod": ([A, I(1)], {}),
    "argmax": ([A], {"axis": 1}), "argmin": ([A], {"axis": 0}),
    "cumsum": ([A, i64(1)], {}), "cumprod": ([A, i64(1)], {"reverse": 1}),
    "reshape": ([A, I(3, 2)], {}), "transpose": ([R(2, 3, 4)], {"perm": (2, 0, 1)}),
    "squeeze": ([R(2, 1, 3), I(1)], {}), "unsqueeze": ([A, I(0)], {}),
    "concat": ([A, B], {"axis": 0}), "split": ([R(4, 3), I(1, 3)], {"axis": 0}),
    "slice": ([R(4, 5), I(1, 0), I(3, 5), I(0, 1), I(1, 2)], {}),
    "expand": ([R(3, 1), I(2, 3, 4)], {}), "tile": ([A, I(2, 1)], {}),
    "pad": ([A, I(1, 0, 1, 2), f32(0.5)], {}), "shape": ([R(2, 3, 4)], {"start": 1}),
    "size": ([A], {}), "range": ([i64(1), i64(10), i64(3)], {}),
    "constant_of_shape": ([I(2, 3)], {"value": np.array([7], np.int32)}),
    "eye_like": ([R(3, 4)], {"k": 1}),
    "gather": ([R(5, 3), I(0, 4, 2)], {"axis": 0}),
    "gather_elements": ([A, np.array([[0, 2], [1, 0]], i64)], {"axis": 1}),
    "gather_nd": ([R(3, 4), np.array([[0, 1], [2, 3]], i64)], {}),
    "scatter_elements": ([np.zeros((3, 3), f32), np.array([[1, 0, 2]], i64), R(1, 3)], {"axis": 0}),
    "scatter_nd": ([np.zeros((4,), f32), np.array([[1], [3]], i64), R(2)], {}),
    "one_hot": ([I(0, 2, 1), i64(3), np.array([0, 1], f32)], {}),
    "nonzero": ([BOOL], {}), "compress": ([A, np.array([True, False, True])], {"axis": 1}),
    "unique": ([np.array([3, 1, 3, 2], i64)], {}), "top_k": ([R(2, 5), I(2)], {}),
    "trilu": ([R(3, 3)], {"upper": 0}), "depth_to_space": ([R(1, 4, 2, 2)], {"blocksize": 2}),
    "space_to_depth": ([R(1, 1, 4, 4)], {"blocksize": 2}),
    "reverse_sequence": ([R(4, 2, 3), I(2, 3)], {"batch_axis": 1, "time_axis": 0}),
    "conv": ([X4, R(3, 2, 3, 3), R(3)], {"pads": (1, 1, 1, 1)}),
    "conv_transpose": ([R(1, 2, 3, 3), R(2, 3, 2, 2)], {"strides": (2, 2)}),
    "conv_integer": ([np.arange(25, dtype=np.uint8).reshape(1, 1, 5, 5), np.ones((1, 1, 2, 2), np.uint8)], {}),
    "matmul_integer": ([np.arange(6, dtype=np.uint8).reshape(2, 3), np.ones((3, 2), np.uint8)], {}),
    "deform_conv": ([R(1, 1, 4, 4), R(1, 1, 2, 2), R(1, 8, 3, 3) * 0.5], {}),
    "causal_conv_with_state": ([R(1, 2, 5), R(2, 1, 3)], {}),
    "max_pool": ([X4], {"kernel_shape": (2, 2), "strides": (2, 2)}),
    "avg_pool": ([X4], {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}),
    "lp_pool": ([X4], {"kernel_shape": (2, 2)}), "global_pool": ([X4], {"mode": "avg"}),
    "max_roi_pool": ([X4, np.array([[0, 0, 0, 3, 3]], f32)], {"pooled_shape": (2, 2)}),
    "max_unpool": ([R(1, 1, 2, 2), np.array([[[[0, 3], [9, 15]]]], i64)], {"kernel_shape": (2, 2),
                                                                           "strides": (2, 2)}),
    "batch_norm": ([X4, R(2), R(2), R(2), P(2)], {}),
    "batch_norm_training": ([X4, R(2), R(2), R(2), P(2)], {}),
    "instance_norm": ([X4, R(2), R(2)], {}), "group_norm": ([R(1, 4, 3), R(4), R(4)], {"num_groups": 2}),
    "layer_norm": ([A, R(3), R(3)], {}), "rms_norm": ([A, R(3)], {}), "lrn": ([X4], {"size": 3}),
    "dropout": ([A, f32(0.5), np.array(False)], {}),
    "attention": ([R(1, 2, 3, 4), R(1, 2, 5, 4), R(1, 2, 5, 4)], {}),
    "rotary_embedding": ([R(1, 2, 3, 4), R(1, 3, 2), R(1, 3, 2)], {}),
    "linear_attention": ([R(1, 3, 4), R(1, 3, 4), R(1, 3, 4)], {"q_num_heads": 2, "kv_num_heads": 2,
                                                                "update_rule": "linear"}),
    "rnn": ([R(3, 2, 4), R(1, 5, 4), R(1, 5, 5)], {}),
    "gru": ([R(3, 2, 4), R(1, 15, 4), R(1, 15, 5)], {}),
    "lstm": ([R(3, 2, 4), R(1, 20, 4), R(1, 20, 5)], {}),
    "resize": ([R(1, 1, 2, 2), None, np.array([1, 1, 2, 2], f32)], {"mode": "linear"}),
    "grid_sample": ([R(1, 1, 3, 3), R(1, 2, 2, 2)], {}),
    "affine_grid": ([R(1, 2, 3), I(1, 1, 3, 4)], {}),
    "roi_align": ([X4, np.array([[0, 0, 3, 3]], f32), I(0)], {"output_height": 2, "output_width": 2}),
    "non_max_suppression": ([np.array([[[0, 0, 1, 1], [0, 0.1, 1, 1.1], [0, 3, 1, 4]]], f32),
                             np.array([[[0.9, 0.8, 0.7]]], f32), I(2), np.array([0.5], f32)], {}),
    "col2im": ([R(1, 4, 4), I(3, 3), I(2, 2)], {}),
    "dft": ([R(1, 8, 1)], {}), "stft": ([R(1, 16, 1), i64(4), None, i64(8)], {}),
    "hann_window": ([i64(8)], {}), "hamming_window": ([i64(8)], {}), "blackman_window": ([i64(8)], {}),
    "mel_weight_matrix": ([i64(4), i64(16), i64(8000), f32(0), f32(4000)], {}),
    "quantize_linear": ([A, f32(0.02), np.uint8(128)], {}),
    "dequantize_linear": ([np.array([0, 128, 255], np.uint8), f32(0.1), np.uint8(128)], {}),
    "dynamic_quantize_linear": ([A], {}),
    "requantize": ([np.array([100, -200, 3000], np.int32), f32(0.01), np.int8(1)], {}),
    "quant_matmul": ([np.arange(6, dtype=np.uint8).reshape(2, 3), np.uint8(2), np.array([[1, -2], [3, 4], [-5, 6]], np.int8),
                      None, np.array([0.1, 0.2], f32), None, np.array([0.5, -0.5], f32), np.uint8(10)],
                     {"activation": "relu"}),
    "quant_conv": ([np.arange(25, dtype=np.uint8).reshape(1, 1, 5, 5), np.uint8(3), np.ones((2, 1, 2, 2), np.int8),
                    None, np.array([0.05, 0.1], f32)], {}),
    "quant_add": ([np.array([1, 200], np.uint8), f32(0.1), np.uint8(5), np.array([-3, 100], np.int8), f32(0.2),
                   np.int8(0), f32(0.3), np.uint8(2)], {"activation": "relu"}),
    "nll_loss": ([R(3, 4), I(0, 3, 1)], {}),
    "adagrad": ([f32(0.1), i64(1), R(3), R(3), P(3)], {}),
    "adam": ([f32(0.1), i64(1), R(3), R(3), P(3), P(3)], {}),
    "momentum": ([f32(0.1), i64(1), R(3), R(3), R(3)], {"alpha": 0.9, "beta": 1.0, "norm_coefficient": 0.0}),
    "tensor_scatter": ([R(1, 2, 6, 4), R(1, 2, 2, 4), I(1)], {}),
    "string_concat": ([np.array(["a", "b"], object), np.array(["x", "y"], object)], {}),
    "string_split": ([np.array(["a b", "c"], object)], {"delimiter": " "}),
    "string_normalizer": ([np.array(["Hello", "World"], object)], {"case_change_action": "LOWER"}),
    "regex_full_match": ([np.array(["ab1", "b"], object)], {"pattern": "[a-z]+[0-9]"}),
    "label_encoder": ([np.array(["a", "c"], object)], {"keys": np.array(["a", "b"], object),
                                                      "values": np.array([1, 2], i64),
                                                      "default": np.array(-1, i64)}),
    "tfidf_vectorizer": ([np.array([1, 2, 1, 3], np.int32)], {
        "mode": "TF", "min_gram_length": 1, "max_gram_length": 1, "max_skip_count": 0,
        "ngram_counts": (0,), "ngram_indexes": (0, 1), "pool": np.array([1, 3], i64)}),
    "tree_ensemble": ([np.array([[0.2], [0.8]], f32)], {
        "tree_roots": (0,), "nodes_featureids": (0,), "nodes_modes": (0,),
        "nodes_splits": np.array([0.5], f32), "nodes_truenodeids": (0,), "nodes_trueleafs": (1,),
        "nodes_falsenodeids": (1,), "nodes_falseleafs": (1,), "leaf_targetids": (0, 0),
        "leaf_weights": np.array([1.0, 2.0], f32)}),
    "image_decoder": ([np.frombuffer(b"P6\n2 1\n255\n" + bytes([1, 2, 3, 4, 5, 6]), np.uint8)], {}),
    "sparse_matmul": ([R(2, 3), np.array([0, 2, 3], np.int32), np.array([0, 2, 1], np.int32), R(3)], {"k": 3}),
    "sparse_conv": ([X4, np.array([0, 2, 3], np.int32), np.array([0, 17, 9], np.int32), R(3), R(2)],
                    {"in_channels": 2, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
    "random_uniform": ([I(2, 3)], {"seed": 1.0}), "random_normal": ([I(2, 3)], {"seed": 1.0}),
    "bernoulli": ([P(2, 3) / 2], {"seed": 1.0}), "multinomial": ([R(2, 3)], {"seed": 1.0, "sample_size": 2}),
})

# ops whose graph attributes are Python functions traced into bodies: op -> (inputs, attrs)
BODY_CASES = {
    "if": ([np.array(True)], {"then_branch": lambda: np.float32(1.0), "else_branch": lambda: np.float32(2.0)}),
    "loop": ([i64(3), None, f32(1.0)], {"body": lambda i, c, v: (c, v * 2)}),
    "scan": ([f32(0.0), R(4)], {"num_scan_inputs": 1, "body": lambda s, x: (s + x, s + x)}),
    "fused": ([A, B], {"body": lambda a, b: a * b + a}),
}
