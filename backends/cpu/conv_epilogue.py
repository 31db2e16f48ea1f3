"""Fold the elementwise pass that lowering stores over a direct conv's output into the conv.

Lowering writes ``conv + bias`` and then an in-place loop nest over the same output for what the
fused group does next, e.g. ``out[i] = max(out[i] + r[i], 0.0)`` (ResNet's residual add and
relu). That is one more pass over the output (the stem's 3.2 MB, 10-15 % of its conv time).
``fuse(body)`` recognizes such a nest right after a ``conv2d`` ExternCall and moves it into the
kernel's register epilogue: ``act(acc + bias [+ R])`` with act none | relu | clip.

A nest qualifies when it is a perfect loop nest storing to the conv's output, at exactly the
positions the conv wrote in the order it wrote them, and its value is one of the forms above
where ``out`` and ``R`` are read at the stored position (checked by evaluating the index
expressions over the whole iteration space with numpy, so any loop shape lowering chose works).
Anything else is left as it is.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from irgraph import dtype as dt

from ..kernel_ir import Buffer, Const, ExternCall, Load, Loop, Op, Store, Var
from .gemm import Epilogue

MAX_POSITIONS = 1 << 24      # bigger outputs are not checked (and not fused)


@dataclass(frozen=True)
class FusedEpilogue:
    epilogue: Epilogue
    residual: Buffer | None = None
    residual_off: int = 0

    def __repr__(self) -> str:
        r = "" if self.residual is None else f" + {self.residual.name}[+{self.residual_off}]"
        return f"{self.epilogue.activation}(acc + bias{r})"


def fuse(body: list) -> list:
    """``body`` with each fusable (conv2d call, epilogue nest) pair replaced by one call."""
    out, i = [], 0
    while i < len(body):
        s = body[i]
        if (isinstance(s, ExternCall) and s.fn == "conv2d" and "epilogue" not in s.attrs
                and i + 1 < len(body)):
            ep = match(s, body[i + 1])
            if ep is not None:
                out.append(ExternCall(s.fn, list(s.args), {**s.attrs, "epilogue": ep}))
                i += 2
                continue
        out.append(s)
        i += 1
    return out


def match(call: ExternCall, stmt) -> FusedEpilogue | None:
    a = call.attrs
    obuf = call.args[3]
    total = a["n"] * a["m"] * a["oh"] * a["ow"]
    loops = []
    while isinstance(stmt, Loop) and len(stmt.body) == 1:
        loops.append(stmt)
        stmt = stmt.body[0]
    if not loops or not isinstance(stmt, Store) or stmt.buf is not obuf or stmt.value.dtype is not dt.float32:
        return None
    if math.prod(lp.extent for lp in loops) != total or total > MAX_POSITIONS:
        return None
    grids = np.meshgrid(*[np.arange(lp.extent, dtype=np.int64) for lp in loops], indexing="ij")
    env = {lp.var.name: g.ravel() for lp, g in zip(loops, grids)}
    want = np.arange(total, dtype=np.int64) + int(a["out_off"])
    memo: dict = {}

    def offset_of(idx) -> int | None:
        """c when ``idx`` is (stored position) + c over the whole space, else None."""
        key = id(idx)
        if key not in memo:
            v = _eval_index(idx, env)
            memo[key] = None if v is None or v.shape != want.shape or not np.all(v - v[0] == want - want[0]) \
                else int(v[0] - want[0])
        return memo[key]
    if offset_of(stmt.index) != 0:
        return None

    def is_acc(e) -> bool:
        return isinstance(e, Load) and e.buf is obuf and offset_of(e.index) == 0

    # activation
    e, act = stmt.value, Epilogue()
    lo = hi = None
    if _is_op(e, "min") and _const_arg(e) is not None:
        hi, e = _const_arg(e)
    if _is_op(e, "max") and _const_arg(e) is not None:
        lo, e = _const_arg(e)
    if lo is not None and hi is None and lo == 0.0:
        act = Epilogue("relu")
    elif lo is not None or hi is not None:
        lo = -math.inf if lo is None else lo
        hi = math.inf if hi is None else hi
        if not lo <= hi:
            return None
        act = Epilogue.clip(lo, hi)
    # acc or acc + R
    if is_acc(e):
        return FusedEpilogue(act)
    if _is_op(e, "add") and not e.fast and len(e.args) == 2:
        x, y = e.args
        if is_acc(y):
            x, y = y, x
        if is_acc(x) and isinstance(y, Load) and y.buf is not obuf and y.dtype is dt.float32:
            off = offset_of(y.index)
            if off is not None:
                return FusedEpilogue(act, y.buf, int(a["out_off"]) + off)
    return None


def _is_op(e, name: str) -> bool:
    return isinstance(e, Op) and e.op == name and e.dtype is dt.float32


def _const_arg(e):
    """(constant, other operand) of a binary op with one float constant operand."""
    if len(e.args) != 2:
        return None
    x, y = e.args
    if isinstance(y, Const) and not isinstance(x, Const):
        return float(y.value), x
    if isinstance(x, Const) and not isinstance(y, Const):
        return float(x.value), y
    return None


def _eval_index(e, env: dict):
    """An int64 index expression over the iteration space (None: not plain index arithmetic)."""
    if isinstance(e, Const):
        return np.int64(e.value) if e.dtype.is_int else None
    if isinstance(e, Var):
        return env.get(e.name)
    if not isinstance(e, Op) or not e.dtype.is_int:
        return None
    args = [_eval_index(x, env) for x in e.args]
    if any(x is None for x in args):
        return None
    f = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "idx_div": np.floor_divide,
         "idx_mod": np.mod, "min": np.minimum, "max": np.maximum}.get(e.op)
    return None if f is None or len(args) != 2 else f(*args)
