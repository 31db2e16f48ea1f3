"""ONNX frontend: importer (ONNX -> Graph), exporter (Graph -> ONNX) and the onnx.backend adapter."""
from .importer import import_model  # noqa: F401
from .exporter import export_model  # noqa: F401
