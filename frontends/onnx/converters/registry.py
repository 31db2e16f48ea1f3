"""Which function converts which ONNX operator: ``@converter("Gemm")`` registers one.

A converter receives a ``ConvertCtx`` (see ``importer.py``) and returns the Values for the
node's outputs (one Value, or a list/tuple in output order; ``None`` for outputs it does not
produce). ``since`` selects by the model's opset: the newest converter whose ``since`` is at
most the opset is used, so attribute-to-input changes between opsets live side by side.
"""
from __future__ import annotations

from typing import Callable

_CONVERTERS: dict[tuple[str, str], list[tuple[int, Callable]]] = {}

DOMAIN_ALIASES = {"ai.onnx": ""}


def converter(op_type: str, domain: str = "", since: int = 1):
    domain = DOMAIN_ALIASES.get(domain, domain)

    def deco(fn):
        lst = _CONVERTERS.setdefault((domain, op_type), [])
        if any(s == since for s, _ in lst):
            raise RuntimeError(f"converter for {domain or 'ai.onnx'}::{op_type} since {since} registered twice")
        lst.append((since, fn))
        lst.sort(key=lambda p: p[0])
        return fn
    return deco


def find_converter(domain: str, op_type: str, opset: int) -> Callable | None:
    domain = DOMAIN_ALIASES.get(domain, domain)
    if domain == "ai.irgraph":
        from irgraph.ops.registry import has_op
        from .irgraph_domain import convert_core_op
        return convert_core_op if has_op(op_type) else None
    best = None
    for since, fn in _CONVERTERS.get((domain, op_type), ()):
        if since <= opset:
            best = fn
    return best


def all_converters() -> dict:
    return dict(_CONVERTERS)
