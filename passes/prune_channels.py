"""``prune_channels``: structured pruning — whole conv output channels / matmul output columns
with the smallest L1 norm are removed, and every consumer shrinks with them, so the model is
really smaller and faster (no sparse kernel needed).

Option ``prune.ratio`` (``irgraph.compile(prune="channels:0.3")``): each prunable channel group
loses ``round(ratio * C)`` of its C channels (at least one channel stays). Option ``prune.align``
(``"channels:0.3:16"``): the count kept is rounded to the nearest multiple of it (at least one
multiple; a group that would keep all its channels is left alone), because dense conv kernels
vectorized over output channels run far slower on counts that are not multiples of the vector
width (on this machine 24 output channels took 2.3x the time of 32).

**Channel groups.** A producer is a conv (group 1) or a matmul whose weight is a constant read by
it alone. Its output channels (axis 1 of a conv, the last axis of a matmul) are followed through
ops that keep them apart: elementwise ops (constants varying along the channel are sliced with
it: biases, scales, folded or unfolded batch norms' ``mul``/``add``), ``batch_norm`` (its four
parameters), pools, reductions over other axes, ``reshape``/``squeeze``/``unsqueeze`` that keep
the leading dims (flatten: each channel becomes a block of rows of the next matmul), up to the
consumers: a conv's input channels, a matmul's weight rows. Values tied by an elementwise op of
two tracked values — **residual adds** — put their producers in one group, pruned
**consistently**: the same channels leave every producer, ranked by the sum of the producers'
L1 norms (each scaled to mean 1). A group is **left alone** when its channels reach anything
else: a graph output, a **concat** (not handled: left alone), a grouped conv, an attention
reshape/transpose, a runtime tensor varying along the channels, a constant that cannot be
sliced, a node with subgraphs. The report (``prune_report.py``) lists each group and why.

**Exactness.** A removed channel whose weights are all zero ("dead") still carries a constant:
its bias, carried through the ops after it (``relu(b)``, a batch norm's shift …). That constant's
contribution to each consumer is added to the consumer's bias (a bias is created when needed),
which is exact for matmuls and for convs without padding (a padded conv sees the constant only
where its window is inside the image: the compensation is then exact in the interior only, and
the report says so). Removing dead channels whose constant is zero is always exact. A unfolded
batch norm right after a producer scales that producer's norms by |gamma / sqrt(var + eps)|.
"""
from __future__ import annotations

import numpy as np

from irgraph.errors import CompileError
from irgraph.graph import Graph, Node, Value
from irgraph.ops.evaluate import reinfer
from irgraph.ops.registry import get_op

from . import prune_report
from .prune_magnitude import check_ratio
from .registry import register_pass

class Space:
    """One set of channels shared by tied tensors (a union-find node; data lives at the root)."""

    def __init__(self, size: int):
        self.parent: Space | None = None
        self.size = size
        self.producers: list = []    # (node, "conv" | "matmul")
        self.adjust: list = []       # (node, input index, axis of the constant, inner)
        self.consumers: list = []    # (node, "conv" | "matmul", inner, kappa at its input or None)
        self.views: list = []        # (reshape node, output axis, columns per channel)
        self.scale: dict = {}        # producer name -> |batch norm scale| right after it
        self.blocked: str | None = None

    def root(self) -> "Space":
        s = self
        while s.parent is not None:
            s = s.parent
        return s


def _union(a: Space, b: Space) -> Space:
    a, b = a.root(), b.root()
    if a is b:
        return a
    b.parent = a
    if a.size != b.size:
        a.blocked = a.blocked or f"tied channel counts differ ({a.size} vs {b.size})"
    a.blocked = a.blocked or b.blocked
    for k in ("producers", "adjust", "consumers", "views"):
        getattr(a, k).extend(getattr(b, k))
    a.scale.update(b.scale)
    return a


def _block(s: Space, reason: str) -> None:
    r = s.root()
    r.blocked = r.blocked or reason


class _Analysis:
    """Channel spaces of every tracked value: ``chan[id(v)] = (space, axis, inner)`` and the
    per-channel constant ``kappa[id(v)]`` a dead channel carries (None where unknown)."""

    def __init__(self, graph: Graph):
        self.g = graph
        self.chan: dict = {}
        self.kappa: dict = {}
        self.spaces: list[Space] = []
        self.users = graph.users()
        self.run()

    # -- helpers --
    def tracked(self, v: Value | None):
        return None if v is None else self.chan.get(id(v))

    def block_inputs(self, n: Node, reason: str) -> None:
        for v in n.inputs:
            t = self.tracked(v)
            if t is not None:
                _block(t[0], reason)

    def single_use_const(self, v: Value | None) -> bool:
        return v is not None and v.const is not None and len(self.users.get(v, ())) == 1

    def set(self, v: Value, space: Space, axis: int, inner: int, kappa) -> None:
        self.chan[id(v)] = (space, axis, inner)
        self.kappa[id(v)] = kappa

    # -- the walk --
    def run(self) -> None:
        for n in self.g.nodes:
            if n.subgraphs():
                self.block_inputs(n, f"read by {n.op} node {n.name!r}, which has subgraphs")
                for sg in n.subgraphs():
                    for v in sg.captured_values():
                        t = self.tracked(v)
                        if t is not None:
                            _block(t[0], f"read inside the subgraph of {n.name!r}")
                continue
            handler = getattr(self, "op_" + n.op, None)
            if handler is None and get_op(n.op).kind == "elementwise":
                handler = self.elementwise
            if handler is None:
                self.block_inputs(n, f"read by {n.op} node {n.name!r}")
            else:
                handler(n)
        for v in self.g.outputs:
            t = self.tracked(v)
            if t is not None:
                _block(t[0], f"reaches the graph output {v.name!r}")

    # -- producers / consumers --
    def op_conv(self, n: Node) -> None:
        x, w = n.inputs[0], n.inputs[1]
        b = n.inputs[2] if len(n.inputs) > 2 else None
        reads = n.attrs["group"] == 1 and self.single_use_const(w) and w.const.ndim >= 3
        ok = reads and (b is None or self.single_use_const(b)) and n.outputs[0].shape is not None
        t = self.tracked(x)
        if t is not None:
            if not reads:
                _block(t[0], f"read by conv {n.name!r} (grouped, or its weight is not a constant it owns)")
            elif t[1] != 1 or t[2] != 1:
                _block(t[0], f"conv {n.name!r} reads them on another axis")
            else:
                t[0].root().consumers.append((n, "conv", 1, self.kappa.get(id(x))))
        if self.tracked(w) is not None or self.tracked(b) is not None:
            self.block_inputs(n, f"used as a weight of conv {n.name!r}")
        if ok:
            s = Space(int(w.const.shape[0]))
            s.producers.append((n, "conv"))
            self.spaces.append(s)
            kappa = np.zeros(s.size) if b is None else np.asarray(b.const, np.float64).reshape(-1)
            self.set(n.outputs[0], s, 1, 1, kappa)

    def op_matmul(self, n: Node) -> None:
        x, w = n.inputs
        ok = (self.single_use_const(w) and w.const.ndim == 2 and x.shape is not None and len(x.shape) >= 1
              and w.const.dtype.kind == "f")
        t = self.tracked(x)
        if t is not None:
            if not ok:
                _block(t[0], f"read by matmul {n.name!r} whose weight is not a constant it owns")
            elif t[1] != len(x.shape) - 1:
                _block(t[0], f"matmul {n.name!r} reads them on another axis")
            else:
                t[0].root().consumers.append((n, "matmul", t[2], self.kappa.get(id(x))))
        if self.tracked(w) is not None:
            self.block_inputs(n, f"used as the right operand of matmul {n.name!r}")
        if ok:
            s = Space(int(w.const.shape[1]))
            s.producers.append((n, "matmul"))
            self.spaces.append(s)
            y = n.outputs[0]
            self.set(y, s, len(y.shape) - 1 if y.shape else 0, 1, np.zeros(s.size))

    # -- ops the channels pass through --
    def elementwise(self, n: Node) -> None:
        outs = n.outputs
        y = outs[0]
        tracked = [(i, v, self.tracked(v)) for i, v in enumerate(n.inputs) if self.tracked(v) is not None]
        if not tracked:
            return
        if len(outs) != 1 or y.shape is None or any(v.shape is None for _, v, _ in tracked):
            self.block_inputs(n, f"{n.op} node {n.name!r} has unknown shapes")
            return
        r = len(y.shape)
        axes = {(t[1] + r - len(v.shape), t[2]) for _, v, t in tracked}
        if len(axes) != 1:
            self.block_inputs(n, f"{n.op} node {n.name!r} mixes channels of different axes")
            return
        (axis, inner), = axes
        space = tracked[0][2][0]
        for _, _, t in tracked[1:]:
            space = _union(space, t[0])
        width = space.root().size * inner
        if y.shape[axis] != width:
            _block(space, f"{n.op} node {n.name!r} changes the channel axis")
            return
        for i, v in enumerate(n.inputs):
            if v is None or self.tracked(v) is not None:
                continue
            shape = v.shape
            pos = axis - (r - len(shape)) if shape is not None else -1
            if shape is not None and (pos < 0 or shape[pos] == 1):
                continue                                    # broadcast along the channels
            if v.const is not None and shape[pos] == width:
                space.root().adjust.append((n, i, pos, inner))
                continue
            _block(space, f"{n.op} node {n.name!r} combines them with {v.name!r}, which varies along them")
            return
        self.set(y, space, axis, inner, self.probe(n, axis, inner, width))

    def probe(self, n: Node, axis: int, inner: int, width: int):
        """The per-channel constant after ``n`` when each tracked input holds its kappa."""
        ins = []
        for v in n.inputs:
            if v is None:
                ins.append(None)
                continue
            t = self.tracked(v)
            if t is not None:
                k = self.kappa.get(id(v))
                if k is None:
                    return None
                shape = [1] * len(v.shape)
                shape[t[1]] = width
                ins.append(np.asarray(k, v.dtype.np).reshape(shape))
            elif v.const is not None:
                ins.append(v.const)
            else:
                return None
        try:
            with np.errstate(all="ignore"):
                res = np.asarray(get_op(n.op).run_reference(ins, dict(n.attrs))[0], np.float64)
        except Exception:   # a reference that refuses the probe: the constant is unknown, not wrong
            return None
        if res.ndim <= axis or res.shape[axis] != width or res.size != width:
            return None
        return res.reshape(-1)

    def op_batch_norm(self, n: Node) -> None:
        x = n.inputs[0]
        t = self.tracked(x)
        if t is None:
            self.block_inputs(n, f"batch norm {n.name!r} parameters")
            return
        s, axis, inner = t
        params = n.inputs[1:5]
        if axis != 1 or inner != 1 or any(p is None or p.const is None or p.const.shape != (s.root().size,)
                                          for p in params):
            _block(s, f"batch norm {n.name!r} has parameters that cannot be sliced")
            return
        for i in range(1, 5):
            s.root().adjust.append((n, i, 0, 1))
        if x.producer is not None and x.producer.op == "conv" and len(self.users.get(x, ())) == 1:
            gamma, var = (np.asarray(p.const, np.float64) for p in (params[0], params[3]))
            s.root().scale[x.producer.name] = np.abs(gamma / np.sqrt(var + n.attrs["epsilon"]))
        self.set(n.outputs[0], s, 1, 1, self.probe(n, 1, 1, s.root().size))

    def pool(self, n: Node, keeps_constant: bool) -> None:
        t = self.tracked(n.inputs[0])
        if t is None:
            return
        s, axis, inner = t
        y = n.outputs[0]
        if axis != 1 or inner != 1 or y.shape is None or len(y.shape) < 2 or y.shape[1] != s.root().size:
            _block(s, f"{n.op} node {n.name!r} reads them on another axis")
            return
        if len(n.outputs) > 1 and self.users.get(n.outputs[1]):
            _block(s, f"the indices output of {n.name!r} is used")
            return
        self.set(y, s, 1, 1, self.kappa.get(id(n.inputs[0])) if keeps_constant else None)

    def op_max_pool(self, n: Node) -> None:
        self.pool(n, True)

    def op_avg_pool(self, n: Node) -> None:
        pads = n.attrs["pads"] or ()
        self.pool(n, not (n.attrs["count_include_pad"] and any(pads)) and n.attrs["auto_pad"] in ("NOTSET", "VALID"))

    def op_global_pool(self, n: Node) -> None:
        self.pool(n, n.attrs["mode"] in ("avg", "max"))

    def op_identity(self, n: Node) -> None:
        t = self.tracked(n.inputs[0])
        if t is not None:
            self.set(n.outputs[0], *t, self.kappa.get(id(n.inputs[0])))

    def op_dropout(self, n: Node) -> None:
        t = self.tracked(n.inputs[0])
        if t is None:
            self.block_inputs(n, f"dropout {n.name!r} ratio")
            return
        if len(n.outputs) > 1 and self.users.get(n.outputs[1]):
            _block(t[0], f"the mask of dropout {n.name!r} is used")
            return
        self.set(n.outputs[0], *t, self.kappa.get(id(n.inputs[0])))

    def reduction(self, n: Node) -> None:
        x = n.inputs[0]
        t = self.tracked(x)
        if t is None:
            self.block_inputs(n, f"axes of {n.name!r}")
            return
        s, axis, inner = t
        axes_v = n.inputs[1] if len(n.inputs) > 1 else None
        if axes_v is None or axes_v.const is None or x.shape is None:
            _block(s, f"{n.op} node {n.name!r} may reduce over them")
            return
        r = len(x.shape)
        axes = {int(a) % r for a in np.asarray(axes_v.const).reshape(-1)}
        if axis in axes:
            _block(s, f"{n.op} node {n.name!r} reduces over them")
            return
        out_axis = axis if n.attrs["keepdims"] else axis - sum(1 for a in axes if a < axis)
        kappa = self.kappa.get(id(x)) if n.op in ("reduce_mean", "reduce_max", "reduce_min") else None
        self.set(n.outputs[0], s, out_axis, inner, kappa)

    op_reduce_mean = op_reduce_max = op_reduce_min = op_reduce_sum = reduction

    def view(self, n: Node) -> None:
        """reshape / squeeze / unsqueeze keeping the dims before the channel axis."""
        x, y = n.inputs[0], n.outputs[0]
        t = self.tracked(x)
        if t is None:
            self.block_inputs(n, f"shape of {n.name!r}")
            return
        s, axis, inner = t
        C = s.root().size
        xs, ys = x.shape, y.shape
        ok = (xs is not None and ys is not None and len(ys) > axis and tuple(ys[:axis]) == tuple(xs[:axis])
              and all(isinstance(d, int) for d in list(xs[axis:]) + list(ys[axis:])))
        if ok:
            d = ys[axis]
            block_in = inner * int(np.prod(xs[axis + 1:], dtype=np.int64))
            ok = d % C == 0 and (d // C) * int(np.prod(ys[axis + 1:], dtype=np.int64)) == block_in
        if ok and n.op == "reshape":
            shp = n.inputs[1]
            ok = shp.const is not None and not n.attrs.get("allowzero")
        if not ok:
            _block(s, f"{n.op} node {n.name!r} regroups them")
            return
        per = ys[axis] // C
        if n.op == "reshape":
            s.root().views.append((n, axis, per))
        k = self.kappa.get(id(x))
        kappa = None if k is None else np.repeat(np.asarray(k)[::inner], per)
        self.set(y, s, axis, per, kappa)

    op_reshape = op_squeeze = op_unsqueeze = op_flatten = view


# ---- choosing and removing channels ------------------------------------------------------------
def _weight(n: Node) -> np.ndarray:
    return n.inputs[1].const


def channel_norms(space: Space) -> np.ndarray:
    """Importance of each channel: the producers' L1 norms, each scaled to mean 1 when tied."""
    total = np.zeros(space.size)
    for n, kind in space.producers:
        w = np.abs(np.asarray(_weight(n), np.float64))
        norms = w.reshape(w.shape[0], -1).sum(axis=1) if kind == "conv" else w.sum(axis=0)
        norms = norms * space.scale.get(n.name, 1.0)
        if len(space.producers) > 1:
            mean = norms.mean()
            norms = norms / mean if mean > 0 else norms
        total += norms
    return total


def dead_channels(space: Space) -> np.ndarray:
    """Boolean per channel: every producer's weights for it are zero."""
    dead = np.ones(space.size, bool)
    for n, kind in space.producers:
        w = _weight(n)
        nz = (w.reshape(w.shape[0], -1) != 0).any(axis=1) if kind == "conv" else (w != 0).any(axis=0)
        dead &= ~nz
    return dead


def _blocks(keep: np.ndarray, inner: int) -> np.ndarray:
    return (keep[:, None] * inner + np.arange(inner)[None, :]).reshape(-1)


def _replace(g: Graph, n: Node, i: int, arr: np.ndarray) -> None:
    old = n.inputs[i]
    base = old.name.split("_pruned")[0] + "_pruned"
    n.inputs[i] = g.add_const(np.ascontiguousarray(arr.astype(old.const.dtype, copy=False)), base)


def _compensate(g: Graph, space: Space, removed: np.ndarray, dead: np.ndarray) -> tuple[bool, int]:
    """Fold the constants of removed dead channels into each consumer's bias. Returns (exact,
    number of dead channels removed)."""
    gone = removed[dead[removed]]
    if gone.size == 0:
        return True, 0
    exact = True
    for n, kind, inner, kappa in space.consumers:
        if kappa is None:
            exact = False
            continue
        k = np.asarray(kappa, np.float64).reshape(space.size, inner)[gone]      # (dead, inner)
        if not np.any(k):
            continue
        w = np.asarray(_weight(n), np.float64)
        if kind == "matmul":
            comp = (k.reshape(-1)[:, None] * w[_blocks(gone, inner)]).sum(axis=0)
            _add_after(g, n, comp)
        else:
            comp = (w[:, gone].reshape(w.shape[0], gone.size, -1).sum(axis=2) * k[:, 0][None, :]).sum(axis=1)
            pads = n.attrs["pads"] or ()
            if any(pads) or n.attrs["auto_pad"] not in ("NOTSET", "VALID"):
                exact = False       # the border windows see the padding, not the constant
            b = n.inputs[2] if len(n.inputs) > 2 else None
            old = np.zeros(w.shape[0]) if b is None else np.asarray(b.const, np.float64)
            arr = (old + comp).astype(_weight(n).dtype)
            if b is None:
                n.inputs = list(n.inputs[:2]) + [g.add_const(arr, n.name + "_bias")]
            else:
                _replace(g, n, 2, arr)
    return exact, int(gone.size)


def _add_after(g: Graph, n: Node, comp: np.ndarray) -> None:
    """``y + comp`` after matmul ``n``: into the constant of the add that already follows it, or
    as a new add."""
    y = n.outputs[0]
    users = g.users().get(y, [])
    if len(users) == 1 and users[0].op == "add" and y not in g.outputs:
        a = users[0]
        j = 1 if a.inputs[0] is y else 0
        c = a.inputs[j]
        if c is not None and c.const is not None and c.const.shape == comp.shape:
            _replace(g, a, j, np.asarray(c.const, np.float64) + comp)
            return
    dtype = _weight(n).dtype
    z = g.op("add", [y, g.add_const(comp.astype(dtype), n.name + "_compensation")], name=n.name + "_compensation")
    for u in users:
        u.inputs = [z if v is y else v for v in u.inputs]
    g.outputs = [z if v is y else v for v in g.outputs]
    g.toposort()


def _apply(g: Graph, space: Space, keep: np.ndarray) -> None:
    for n, kind in space.producers:
        if kind == "conv":
            _replace(g, n, 1, _weight(n)[keep])
            if len(n.inputs) > 2 and n.inputs[2] is not None:
                _replace(g, n, 2, n.inputs[2].const[keep])
        else:
            _replace(g, n, 1, _weight(n)[:, keep])
    for n, i, pos, inner in space.adjust:
        _replace(g, n, i, np.take(n.inputs[i].const, _blocks(keep, inner), axis=pos))
    for n, kind, inner, _ in space.consumers:
        if kind == "conv":
            _replace(g, n, 1, _weight(n)[:, keep])
        else:
            _replace(g, n, 1, _weight(n)[_blocks(keep, inner)])
    for n, axis, per in space.views:
        shape = np.array(n.inputs[1].const, np.int64)
        if shape[axis] > 0:
            shape[axis] = len(keep) * per
            _replace(g, n, 1, shape)


def plan(graph: Graph, ratio: float, align: int = 1) -> list[dict]:
    """The channel groups of ``graph`` with the channels each would lose (nothing changes)."""
    a = _Analysis(graph)
    groups = []
    for s in {id(x.root()): x.root() for x in a.spaces}.values():
        names = [n.name for n, _ in s.producers]
        entry = {"producers": names, "channels": s.size, "removed": 0, "space": s}
        if s.blocked:
            entry.update(status="left alone", reason=s.blocked)
        elif not s.consumers:
            entry.update(status="left alone", reason="no consumer reads them")
        else:
            n_remove = min(int(ratio * s.size + 0.5), s.size - 1)      # the nearest count
            if align > 1:
                keep = max(align, int((s.size - n_remove) / align + 0.5) * align)
                n_remove = max(s.size - keep, 0)
            if n_remove <= 0:
                step = f" in steps of {align}" if align > 1 else ""
                entry.update(status="left alone", reason=f"{s.size} channel(s): {ratio} of them{step} rounds to 0")
            else:
                order = np.argsort(channel_norms(s), kind="stable")
                # "drop": the removed channel indices (in the report too)
                entry.update(status="pruned", removed=n_remove, drop=np.sort(order[:n_remove]),
                             keep=np.sort(order[n_remove:]))
        groups.append(entry)
    return groups


@register_pass("prune_channels",
               description="remove the lowest-L1 conv output channels / matmul columns and shrink every "
                           "consumer; residual-tied groups pruned together (option prune.ratio)")
def prune_channels(graph: Graph, ctx) -> bool:
    ratio = ctx.option("prune.ratio") if ctx is not None else None
    if ratio is None:
        raise CompileError("prune_channels needs the option prune.ratio",
                           hint="irgraph.compile(model, prune='channels:0.3') sets it")
    ratio = check_ratio(ratio)
    align = int(ctx.option("prune.align", 1))
    if align < 1:
        raise CompileError("prune.align must be a positive integer", actual=align)
    prune_report.start(graph, ctx.option("prune.spec", f"channels:{ratio}"))
    groups = plan(graph, ratio, align)
    # keyed by the producers' names: the groups are found again after each change
    chosen = {frozenset(e["producers"]): e for e in groups if e["status"] == "pruned"}
    for e in chosen.values():
        # one analysis serves every group: compensation changes a consumer's bias by
        # sum_c kappa_c * W[m, c], which is 0 for the consumer's own dead outputs m (W[m] == 0),
        # so no dead channel's constant changes
        e["exact"], e["dead"] = _compensate(graph, e["space"], e["drop"], dead_channels(e["space"]))
    chosen = {key: e["keep"] for key, e in chosen.items()}
    if chosen:
        # compensation may have added biases and adds: analyse again, then slice
        again = {frozenset(e["producers"]): e for e in plan(graph, ratio, align)}
        for key, keep in chosen.items():
            e = again.get(key)
            if e is None or e["status"] != "pruned":
                raise CompileError(f"internal: channel group of {sorted(key)} changed after compensation")
            _apply(graph, e["space"], keep)
        graph.remove_unused()
        reinfer(graph)
    rep = graph.meta["prune_report"]
    rep["groups"] = [{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in e.items()
                      if k not in ("space", "keep")} for e in groups]
    prune_report.finish(graph)
    return bool(chosen)
