"""A stand-in for ``pycuda.driver`` whose "device" is host memory and whose kernels run in the
CUDA emulator: the PyCUDA runtime's own code (module loading, one weights upload, the arena,
the stream, graph capture and replay) runs unchanged on a machine without a GPU.

Only what ``runtime_pycuda.PyCudaSession`` calls is modelled. Device allocations are numpy
byte arrays (a pointer is their address); copies are ``memmove``; a launch on a stream that
is capturing is recorded instead of run, and ``Graph.instantiate().launch`` replays the
records. ``calls`` counts what happened, so tests can see that a replay launched no kernel
one by one."""
from __future__ import annotations

import ctypes
from collections import Counter

import numpy as np


class FakeAllocation:
    def __init__(self, nbytes: int):
        self.buf = np.zeros(max(int(nbytes), 1) + 64, np.uint8)
        self.ptr = self.buf.ctypes.data + (-self.buf.ctypes.data) % 64

    def __int__(self) -> int:
        return self.ptr

    __index__ = __int__


def _addr(x) -> int:
    return x.ctypes.data if isinstance(x, np.ndarray) else int(x)


class FakeDriver:
    def __init__(self, emu_module, compute_capability=(9, 0), capture: bool = True):
        self.emu = emu_module
        self.calls: Counter = Counter()
        self.cc = compute_capability
        drv = self

        class Context:
            def push(self):
                drv.calls["push"] += 1

            def pop(self):
                drv.calls["pop"] += 1

        class Device:
            def __init__(self, i: int):
                self.i = i

            @staticmethod
            def count() -> int:
                return 1

            def name(self) -> str:
                return "fake device (CUDA emulator)"

            def compute_capability(self):
                return drv.cc

            def retain_primary_context(self):
                return Context()

        class Graph:
            def __init__(self, records):
                self.records = records

            def instantiate(self):
                drv.calls["instantiate"] += 1
                return GraphExec(self.records)

        class GraphExec:
            def __init__(self, records):
                self.records = list(records)

            def launch(self, stream=None):
                drv.calls["graph_launch"] += 1
                for fn, grid, block, args in self.records:
                    drv.emu.launch(fn, grid, block, args)

        class Stream:
            def __init__(self, flags: int = 0):
                self.recording = None

            def synchronize(self):
                drv.calls["synchronize"] += 1

            if capture:
                def begin_capture(self, mode=None):
                    drv.calls["begin_capture"] += 1
                    self.recording = []

                def end_capture(self):
                    drv.calls["end_capture"] += 1
                    rec, self.recording = self.recording, None
                    return Graph(rec)

        class Function:
            def __init__(self, name: str):
                self.name = name

            def prepare(self, arg_types):
                self.arg_types = arg_types

            def prepared_async_call(self, grid, block, stream, *args):
                ptrs = [int(a) for a in args]
                if stream is not None and stream.recording is not None:
                    stream.recording.append((self.name, grid, block, ptrs))
                    return
                drv.calls["kernel_launch"] += 1
                drv.emu.launch(self.name, grid, block, ptrs)

        class Module:
            def get_function(self, name: str):
                return Function(name)

        self.Device, self.Stream, self.Graph, self.Module = Device, Stream, Graph, Module

    def init(self) -> None:
        pass

    def module_from_buffer(self, image):
        self.calls["module_from_buffer"] += 1
        self.image = image
        return self.Module()

    def mem_alloc(self, nbytes: int) -> FakeAllocation:
        self.calls["mem_alloc"] += 1
        return FakeAllocation(nbytes)

    def memcpy_htod(self, dst, src) -> None:
        src = np.ascontiguousarray(src)
        ctypes.memmove(_addr(dst), src.ctypes.data, src.nbytes)

    def memcpy_dtoh(self, dst, src) -> None:
        ctypes.memmove(dst.ctypes.data, _addr(src), dst.nbytes)

    def memcpy_htod_async(self, dst, src, stream=None) -> None:
        self.memcpy_htod(dst, src)

    def memcpy_dtoh_async(self, dst, src, stream=None) -> None:
        self.memcpy_dtoh(dst, src)
