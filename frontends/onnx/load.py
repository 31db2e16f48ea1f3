"""Reading ONNX models safely: from a path, bytes or a ModelProto, with external data files
resolved only inside the model's own directory."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from irgraph.errors import ModelImportError

MAX_MODEL_BYTES = 2 ** 31 - 1  # protobuf's own limit for one message


def load_model(model, base_dir: str | os.PathLike | None = None) -> tuple[onnx.ModelProto, Path | None]:
    """Return ``(ModelProto, directory holding its external data or None)``."""
    if isinstance(model, onnx.ModelProto):
        return model, Path(base_dir) if base_dir else None
    if isinstance(model, (bytes, bytearray, memoryview)):
        return _parse(bytes(model), "<bytes>"), Path(base_dir) if base_dir else None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ModelImportError(f"model file {str(path)!r} does not exist")
        if path.is_dir():
            raise ModelImportError(f"{str(path)!r} is a directory, not an ONNX model file")
        size = path.stat().st_size
        if size == 0:
            raise ModelImportError(f"model file {str(path)!r} is empty")
        if size > MAX_MODEL_BYTES:
            raise ModelImportError(f"model file {str(path)!r} is {size} bytes; the ONNX protobuf limit is 2 GiB",
                                   hint="store large weights as external data")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ModelImportError(f"cannot read model file {str(path)!r}: {e.strerror}") from None
        return _parse(data, str(path)), path.resolve().parent
    raise ModelImportError(f"cannot load a model from a {type(model).__name__}; "
                           "give a path, bytes, an onnx.ModelProto or an irgraph.Graph")


def _parse(data: bytes, where: str) -> onnx.ModelProto:
    m = onnx.ModelProto()
    try:
        m.ParseFromString(data)
    except Exception as e:  # protobuf raises DecodeError (or RuntimeWarning-ish errors) on junk
        raise ModelImportError(f"{where} is not a valid ONNX model (truncated or corrupt protobuf: {e})") from None
    if not m.HasField("graph"):
        raise ModelImportError(f"{where} holds no graph: not an ONNX model, or truncated")
    return m


def tensor_to_numpy(t: onnx.TensorProto, base_dir: Path | None, what: str) -> np.ndarray:
    """Convert a TensorProto, reading external data only from files inside ``base_dir``."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return _external(t, base_dir, what)
    if t.data_type == onnx.TensorProto.UNDEFINED:
        raise ModelImportError(f"tensor {what!r} has no element type")
    numel = 1
    for d in t.dims:
        if d < 0:
            raise ModelImportError(f"tensor {what!r} has a negative dimension {d}")
        numel *= d
    from irgraph.types import MAX_ELEMENTS
    if numel > MAX_ELEMENTS:
        raise ModelImportError(f"tensor {what!r} declares {numel} elements; limit is {MAX_ELEMENTS}")
    try:
        arr = numpy_helper.to_array(t)
    except Exception as e:
        raise ModelImportError(f"tensor {what!r} cannot be decoded: {e}") from None
    return arr


def _external(t: onnx.TensorProto, base_dir: Path | None, what: str) -> np.ndarray:
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location")
    if not loc:
        raise ModelImportError(f"external tensor {what!r} has no location")
    if base_dir is None:
        raise ModelImportError(f"tensor {what!r} lives in external file {loc!r}, but the model was not "
                               "loaded from a path", hint="load the model from its file path")
    base = base_dir.resolve()
    target = (base / loc).resolve()
    if os.path.isabs(loc) or (base != target and base not in target.parents):
        raise ModelImportError(f"external data path {loc!r} of tensor {what!r} escapes the model's folder {str(base)!r}")
    if not target.is_file():
        raise ModelImportError(f"external data file {loc!r} of tensor {what!r} not found in {str(base)!r}")
    offset = int(info.get("offset", 0) or 0)
    length = info.get("length")
    size = target.stat().st_size
    length = int(length) if length else size - offset
    if offset < 0 or length < 0 or offset + length > size:
        raise ModelImportError(f"external data of tensor {what!r} (offset {offset}, length {length}) "
                               f"runs past the end of {loc!r} ({size} bytes)")
    with open(target, "rb") as f:
        f.seek(offset)
        raw = f.read(length)
    t2 = onnx.TensorProto()
    t2.CopyFrom(t)
    del t2.external_data[:]
    t2.data_location = onnx.TensorProto.DEFAULT
    t2.raw_data = raw
    try:
        return numpy_helper.to_array(t2)
    except Exception as e:
        raise ModelImportError(f"external tensor {what!r} does not match its declared shape/type: {e}") from None
