"""ONNX node cases the CPU backend passes but the CUDA backend does not, each with its reason.

tests/backends/cuda/test_cuda_node_cases.py runs every node case that passes on target="cpu"
(the interpreter's list and tests/backends/cpu/cpu_expected_failures.py excluded) through the
CUDA printer and the emulator; a case listed here must still fail (strict xfail).

Empty: every such case passes (1,761 with onnx 1.20), narrow types included — float8/float4
and the 4- and 2-bit integers are held one element a byte, as ml_dtypes stores them
(backends/cuda/prelude_narrow.py). A case that stops passing is a bug to fix, or an entry
here with the reason it cannot pass."""
from __future__ import annotations

CUDA_EXPECTED_FAILURES: dict[str, str] = {}
