"""Latency of the numpy reference interpreter against onnxruntime on models built in code.

The interpreter is the oracle, not the fast path; these numbers show what the compiled targets
(issue: CPU backend) have to beat, and catch regressions in the reference implementations.
"""
from __future__ import annotations

import os
import sys


sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import irgraph  # noqa: E402
import models  # noqa: E402


class InterpreterVsOnnxruntime:
    params = (["mlp", "resnet", "bert_layer", "lstm"],)
    param_names = ["model"]
    timeout = 300

    def setup(self, name):
        self.proto = models.ALL[name]()
        self.feeds = models.feeds(self.proto, {"N": 8, "S": 32}, seed=0)
        self.model = irgraph.compile(self.proto)
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        self.sess = ort.InferenceSession(self.proto.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def time_interp(self, name):
        self.model.run(**self.feeds)

    def time_onnxruntime(self, name):
        self.sess.run(None, self.feeds)

    def time_import(self, name):
        irgraph.to_graph(self.proto)

    def track_interp_over_onnxruntime(self, name):
        import timeit
        a = min(timeit.repeat(lambda: self.model.run(**self.feeds), number=3, repeat=3))
        b = min(timeit.repeat(lambda: self.sess.run(None, self.feeds), number=3, repeat=3))
        return a / b
    track_interp_over_onnxruntime.unit = "ratio"
