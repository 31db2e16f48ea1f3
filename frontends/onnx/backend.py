"""The ``onnx.backend.base.Backend`` protocol over irgraph, so ONNX's own test runners drive us.

    from irgraph.frontends.onnx import backend
    rep = backend.prepare(model, device="CPU", target="interp")
    outputs = rep.run([x])
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType

import irgraph
from irgraph.errors import IrgraphError

from .importer import import_model

_DEVICE_TARGETS = {
    "interp": DeviceType.CPU,
    "cpu": DeviceType.CPU,
    "cuda": DeviceType.CUDA,
    "cuda-emulator": DeviceType.CPU,
}


class IrgraphRep(BackendRep):
    def __init__(self, compiled: "irgraph.CompiledModel"):
        self.compiled = compiled

    def run(self, inputs, **kwargs):
        inputs = _to_numpy(inputs)
        if isinstance(inputs, dict):
            outs = self.compiled.run(**inputs)
        elif isinstance(inputs, (list, tuple)):
            outs = self.compiled.run(*inputs)
        else:
            outs = self.compiled.run(inputs)
        return [np.asarray(o) for o in outs]


def _to_numpy(inputs):
    """ONNX test data may carry TensorProtos (for dtypes numpy lacks natively)."""
    from onnx import numpy_helper

    def conv(x):
        return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x
    if isinstance(inputs, dict):
        return {k: conv(v) for k, v in inputs.items()}
    if isinstance(inputs, (list, tuple)):
        return [conv(x) for x in inputs]
    return conv(inputs)


class IrgraphBackend(Backend):
    @classmethod
    def supports_device(cls, device: str) -> bool:
        try:
            d = Device(device)
        except Exception:
            return False
        return d.type in (DeviceType.CPU, DeviceType.CUDA)

    @classmethod
    def prepare(cls, model, device: str = "CPU", target: str = "interp", **options) -> IrgraphRep:
        dev = Device(device)
        want = _DEVICE_TARGETS.get(target)
        if want is not None and want != dev.type:
            raise IrgraphError(f"target {target!r} does not run on device {device!r}")
        graph = import_model(model)
        return IrgraphRep(irgraph.compile(graph, target=target, **options))

    @classmethod
    def run_model(cls, model, inputs, device: str = "CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(cls, node, inputs, device: str = "CPU", outputs_info=None, **kwargs):
        """Run one NodeProto on ``inputs`` (input types are taken from the arrays)."""
        from onnx import helper
        opset = kwargs.pop("opset_version", onnx.defs.onnx_opset_version())
        ins = []
        names = [n for n in node.input]
        arrays = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
        feeds = []
        for name, arr in zip([n for n in names if n], arrays):
            arr = np.asarray(arr)
            ins.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
            feeds.append(arr)
        outs = [helper.make_tensor_value_info(o, onnx.TensorProto.UNDEFINED, None) for o in node.output if o]
        graph = helper.make_graph([node], "run_node", ins, outs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(node.domain or "", opset)])
        return cls.prepare(model, device, **kwargs).run(feeds)


prepare = IrgraphBackend.prepare
run_model = IrgraphBackend.run_model
run_node = IrgraphBackend.run_node
supports_device = IrgraphBackend.supports_device
