"""Whole models on the interpreter agree with onnxruntime: the light ImageNet CNNs shipped in the
``onnx`` package and the models the tests build in code (MLP, ResNet, BERT-style layer, LSTM)."""
from __future__ import annotations

import glob
import os

import numpy as np
import onnx
import pytest

import irgraph
import models

ort = pytest.importorskip("onnxruntime")

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT = sorted(glob.glob(os.path.join(LIGHT_DIR, "*.onnx")))
RTOL, ATOL = 1e-3, 1e-4


def _ort_run(model: onnx.ModelProto, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _check(model: onnx.ModelProto, feeds):
    want = _ort_run(model, feeds)
    got = irgraph.compile(model).run(**feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL)


def test_light_models_are_all_present():
    names = {os.path.basename(p) for p in LIGHT}
    for want in ("light_resnet50.onnx", "light_densenet121.onnx", "light_inception_v1.onnx",
                 "light_inception_v2.onnx", "light_shufflenet.onnx", "light_squeezenet.onnx",
                 "light_vgg19.onnx", "light_bvlc_alexnet.onnx", "light_zfnet512.onnx"):
        assert want in names


@pytest.mark.parametrize("path", LIGHT, ids=[os.path.basename(p)[6:-5] for p in LIGHT])
def test_light_model_matches_onnxruntime(path):
    m = onnx.load(path)
    feeds = models.feeds(m, seed=0)
    # the light models' weights are constant-filled; scale the input so activations stay O(1)
    feeds = {k: (0.1 * v).astype(v.dtype) for k, v in feeds.items()}
    _check(m, feeds)


@pytest.mark.parametrize("name", sorted(models.ALL))
@pytest.mark.parametrize("dims", [{"N": 1, "S": 5}, {"N": 3, "S": 7}], ids=["n1", "n3"])
def test_built_model_matches_onnxruntime(name, dims):
    m = models.ALL[name]()
    _check(m, models.feeds(m, dims, seed=1))
