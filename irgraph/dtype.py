"""Element types of tensors: one DType per supported scalar kind, with its numpy and ONNX codes."""
from __future__ import annotations

import numpy as np
import ml_dtypes


class DType:
    """An element type. Instances are unique, so compare with ``is`` or ``==``."""

    __slots__ = ("name", "np", "onnx", "bits", "kind")
    _by_name: dict[str, "DType"] = {}
    _by_onnx: dict[int, "DType"] = {}
    _by_np: dict[np.dtype, "DType"] = {}

    def __init__(self, name: str, np_dtype, onnx_code: int, bits: int, kind: str):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.onnx = onnx_code
        self.bits = bits
        self.kind = kind  # 'f' float, 'i' signed int, 'u' unsigned int, 'b' bool, 'c' complex, 's' string
        DType._by_name[name] = self
        DType._by_onnx[onnx_code] = self
        DType._by_np.setdefault(self.np, self)

    # ---- classification ----------------------------------------------------------------
    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.kind in ("i", "u")

    @property
    def is_signed(self) -> bool:
        return self.kind in ("i", "f", "c")

    @property
    def is_bool(self) -> bool:
        return self.kind == "b"

    @property
    def itemsize(self) -> int:
        return self.np.itemsize

    # ---- lookups -----------------------------------------------------------------------
    @staticmethod
    def from_name(name: str) -> "DType":
        try:
            return DType._by_name[name]
        except KeyError:
            from .errors import IrgraphError
            raise IrgraphError(f"unknown dtype {name!r}; known: {', '.join(sorted(DType._by_name))}") from None

    @staticmethod
    def from_onnx(code: int) -> "DType":
        try:
            return DType._by_onnx[code]
        except KeyError:
            from .errors import ModelImportError
            raise ModelImportError(f"unsupported ONNX tensor element type {code}") from None

    @staticmethod
    def from_numpy(dt) -> "DType":
        dt = np.dtype(dt)
        if dt.kind in ("U", "S", "O"):
            return string
        try:
            return DType._by_np[dt]
        except KeyError:
            from .errors import IrgraphError
            raise IrgraphError(f"unsupported numpy dtype {dt}") from None

    @staticmethod
    def all() -> list["DType"]:
        return list(DType._by_name.values())

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self):
        return (DType.from_name, (self.name,))


float32 = DType("float32", np.float32, 1, 32, "f")
uint8 = DType("uint8", np.uint8, 2, 8, "u")
int8 = DType("int8", np.int8, 3, 8, "i")
uint16 = DType("uint16", np.uint16, 4, 16, "u")
int16 = DType("int16", np.int16, 5, 16, "i")
int32 = DType("int32", np.int32, 6, 32, "i")
int64 = DType("int64", np.int64, 7, 64, "i")
string = DType("string", np.object_, 8, 0, "s")
bool_ = DType("bool", np.bool_, 9, 8, "b")
float16 = DType("float16", np.float16, 10, 16, "f")
float64 = DType("float64", np.float64, 11, 64, "f")
uint32 = DType("uint32", np.uint32, 12, 32, "u")
uint64 = DType("uint64", np.uint64, 13, 64, "u")
complex64 = DType("complex64", np.complex64, 14, 64, "c")
complex128 = DType("complex128", np.complex128, 15, 128, "c")
bfloat16 = DType("bfloat16", ml_dtypes.bfloat16, 16, 16, "f")
float8e4m3fn = DType("float8e4m3fn", ml_dtypes.float8_e4m3fn, 17, 8, "f")
float8e4m3fnuz = DType("float8e4m3fnuz", ml_dtypes.float8_e4m3fnuz, 18, 8, "f")
float8e5m2 = DType("float8e5m2", ml_dtypes.float8_e5m2, 19, 8, "f")
float8e5m2fnuz = DType("float8e5m2fnuz", ml_dtypes.float8_e5m2fnuz, 20, 8, "f")
uint4 = DType("uint4", ml_dtypes.uint4, 21, 4, "u")
int4 = DType("int4", ml_dtypes.int4, 22, 4, "i")
float4e2m1 = DType("float4e2m1", ml_dtypes.float4_e2m1fn, 23, 4, "f")
float8e8m0 = DType("float8e8m0", ml_dtypes.float8_e8m0fnu, 24, 8, "f")
uint2 = DType("uint2", ml_dtypes.uint2, 25, 2, "u")
int2 = DType("int2", ml_dtypes.int2, 26, 2, "i")

FLOATS = (float16, bfloat16, float32, float64)
INTS = (int8, int16, int32, int64, uint8, uint16, uint32, uint64)
