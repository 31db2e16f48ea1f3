"""The direct convolution kernels (backends/cpu/conv_direct.py: a vector of outputs along a row;
conv_direct_oc.py: a vector of output channels), their choice in lowering (conv_template.py) and
the epilogue folded into them (conv_epilogue.py), against the numpy interpreter: strides,
dilations, uneven pads, channel counts that are not a multiple of the register tile, rows shorter
than a vector, tiles over several rows, batches, threads."""
from __future__ import annotations

import re

import numpy as np
import pytest

import irgraph
from irgraph.backends.cpu import conv_epilogue, conv_template, llvm_target
from irgraph.backends.cpu.conv_direct import ConvGeometry, DirectConv, DirectConvConfig
from irgraph.backends.cpu.conv_direct_oc import DirectConvOC, OcTile, tile_for
from irgraph.backends.cpu.gemm import Epilogue
from irgraph.graph import Graph
from irgraph.types import TensorType

from lowercheck import private_object_cache  # noqa: F401  (autouse fixture: a temporary object cache)


def _out_hw(h, w, k, s, d, p):
    return ((h + p[0] + p[2] - (k[0] - 1) * d[0] - 1) // s[0] + 1,
            (w + p[1] + p[3] - (k[1] - 1) * d[1] - 1) // s[1] + 1)


def _graph(xshape, wshape, attrs, bias, relu, residual, seed=0, clip=None):
    rng = np.random.default_rng(seed)
    g = Graph()
    x = g.add_input("x", TensorType(xshape, "float32"))
    w = g.add_const((rng.standard_normal(wshape) / np.sqrt(np.prod(wshape[1:]))).astype(np.float32))
    ins = [x, w] + ([g.add_const(rng.standard_normal(wshape[0]).astype(np.float32))] if bias else [])
    y = g.op("conv", ins, attrs)
    feeds = [rng.standard_normal(xshape).astype(np.float32)]
    if residual:
        r = g.add_input("r", y.type)
        y = g.op("add", [r, y] if residual == "left" else [y, r])
        feeds.append(rng.standard_normal(y.type.shape).astype(np.float32))
    if relu:
        y = g.op("relu", [y])
    if clip is not None:
        lo, hi = (g.add_const(np.array(v, np.float32)) for v in clip)
        y = g.op("clip", [y, lo, hi])
    g.set_outputs([y])
    return g, feeds


def _reference(xshape, wshape, attrs, bias=True, relu=False, residual=False, seed=0, clip=None):
    g, feeds = _graph(xshape, wshape, attrs, bias, relu, residual, seed, clip)
    return g, feeds, irgraph.compile(g).run(*feeds)[0]


# (x shape, w shape, attrs): odd sizes everywhere
GEOMETRIES = [
    ((1, 3, 19, 21), (7, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 5, 12, 40), (9, 5, 3, 3), {"pads": [0, 2, 1, 0]}),                        # uneven pads
    ((1, 4, 23, 22), (6, 4, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),     # stem-like
    ((1, 6, 17, 35), (5, 6, 3, 3), {"strides": [2, 1], "pads": [1, 1, 1, 1]}),
    ((1, 6, 17, 35), (5, 6, 3, 2), {"strides": [1, 2], "pads": [1, 0, 0, 1]}),
    ((1, 3, 16, 30), (4, 3, 3, 3), {"dilations": [2, 3], "pads": [2, 3, 2, 3]}),
    ((1, 2, 9, 9), (3, 2, 3, 3), {"strides": [2, 2], "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 8, 6, 5), (10, 8, 2, 3), {}),                                             # rows << a vector
]


def _kernel(kind, g, tile):
    lanes = llvm_target.host_cpu().f32_lanes
    ep = dict(epilogue=Epilogue("relu"), has_bias=True, has_residual=True, parallel=True)
    if kind == "rows":
        return DirectConv(g, DirectConvConfig.for_host(mr=tile[0], nv=tile[1]), **ep)
    t = tile_for(g, lanes) if tile is None else OcTile(lanes=lanes, r=tile[0], rw=tile[1], nv=tile[2])
    return DirectConvOC(g, t, **ep)


@pytest.mark.parametrize("xs,ws,attrs", GEOMETRIES)
@pytest.mark.parametrize("kind,tile", [("rows", (4, 2)), ("rows", (3, 3)), ("oc", None), ("oc", (2, 3, 1)),
                                       ("oc", (1, 4, 2))])
def test_kernel_matches_interpreter(xs, ws, attrs, kind, tile):
    from irgraph.ops.windows import raiser, window_plan
    plan = window_plan(xs[2:], ws[2:], {"strides": (1, 1), "dilations": (1, 1), "pads": (0,) * 4, **attrs},
                       raiser("conv"))
    g = conv_template.geometry(xs, ws, plan)
    f = _kernel(kind, g, tile).build()
    graph, feeds, ref = _reference(xs, ws, attrs, relu=True, residual=True)
    w = graph.nodes[0].inputs[1].const
    b = graph.nodes[0].inputs[2].const
    for nth in (1, 2):
        got = f(feeds[0], w, b, feeds[1], num_threads=nth)
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_packed_weights_round_trip():
    g = ConvGeometry(c=3, h=8, w=8, m=10, kh=3, kw=2, oh=6, ow=7)
    k = DirectConv(g, DirectConvConfig(mr=4, nv=1))
    w = np.random.default_rng(1).standard_normal((10, 3, 3, 2)).astype(np.float32)
    pk = k.pack_weights(w)
    assert pk.size == k.packed_weights_floats() == 3 * 3 * 3 * 2 * 4
    np.testing.assert_array_equal(conv_template.packed_weights_reference(k, pk), w)
    k = DirectConvOC(g, OcTile(lanes=8, r=1, rw=7, nv=1))
    pk = k.pack_weights(w)
    assert pk.size == 2 * 3 * 3 * 2 * 8
    np.testing.assert_array_equal(conv_template.packed_weights_reference(k, pk), w)


@pytest.fixture
def always_direct(monkeypatch):
    """Direct conv for every shape it supports; counts choices and fused epilogues."""
    seen = {"direct": 0, "fused": []}
    monkeypatch.setattr(conv_template, "MIN_LANE_USE", 0.0)
    monkeypatch.setattr(conv_template, "MIN_LANE_USE_OC", 0.0)
    choose, fuse = conv_template.choose, conv_epilogue.match

    def counting_choose(*a, **k):
        r = choose(*a, **k)
        seen["direct"] += r is not None
        return r

    def counting_match(*a, **k):
        r = fuse(*a, **k)
        if r is not None:
            seen["fused"].append(r)
        return r
    monkeypatch.setattr(conv_template, "choose", counting_choose)
    monkeypatch.setattr(conv_epilogue, "match", counting_match)
    return seen


def _compiled(g, threads=1):
    return irgraph.compile(g, target="cpu", opt_level=2, num_threads=threads)


@pytest.mark.parametrize("bias,relu,residual,clip", [
    (True, True, False, None), (False, False, False, None), (True, True, "right", None),
    (True, False, "left", None), (False, False, "right", (0.0, 6.0)), (True, False, False, (-0.5, 0.25)),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_epilogues_through_compile(always_direct, bias, relu, residual, clip, threads):
    xs, ws, attrs = (2, 5, 14, 33), (11, 5, 3, 3), {"pads": [1, 1, 1, 1]}
    g, feeds, ref = _reference(xs, ws, attrs, bias=bias, relu=relu, residual=residual, clip=clip)
    got = _compiled(g, threads).run(*feeds)[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    assert always_direct["direct"] >= 1
    if not (relu or residual or clip):   # conv (+ bias) alone: nothing after the call to fold
        assert always_direct["fused"] == []
        return
    want = "relu" if relu else ("clip" if clip else "none")
    assert [e.epilogue.activation for e in always_direct["fused"]] == [want]
    assert (always_direct["fused"][0].residual is not None) == bool(residual)


def test_epilogue_that_does_not_fit_stays_a_loop(always_direct):
    """conv -> sigmoid: not a kernel epilogue; the in-place loop after the call computes it."""
    rng = np.random.default_rng(2)
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 12, 30), "float32"))
    w = g.add_const(rng.standard_normal((6, 4, 3, 3)).astype(np.float32))
    y = g.op("sigmoid", [g.op("conv", [x, w], {"pads": [1, 1, 1, 1]})])
    g.set_outputs([y])
    xv = rng.standard_normal((1, 4, 12, 30)).astype(np.float32)
    np.testing.assert_allclose(_compiled(g).run(xv)[0], irgraph.compile(g).run(xv)[0], rtol=1e-4, atol=1e-5)
    assert always_direct["direct"] == 1 and always_direct["fused"] == []


def test_resnet18_layers_choose_direct_where_it_pays():
    from irgraph.ops.windows import raiser, window_plan

    def chosen(xs, ws, s, p):
        plan = window_plan(xs[2:], ws[2:], {"strides": (s, s), "dilations": (1, 1), "pads": (p,) * 4},
                           raiser("conv"))
        k = conv_template.choose(xs, ws, plan, 1)
        return None if k is None else (type(k).__name__, getattr(k, "tile", None))
    if llvm_target.host_cpu().f32_lanes != 16:
        pytest.skip("the thresholds are for 16-lane vectors")
    oc = "DirectConvOC"
    assert chosen((1, 3, 224, 224), (64, 3, 7, 7), 2, 3) == (oc, OcTile(r=1, rw=14, nv=1))    # stem
    assert chosen((1, 64, 56, 56), (64, 64, 3, 3), 1, 1) == (oc, OcTile(r=1, rw=14, nv=1))
    assert chosen((1, 64, 56, 56), (128, 64, 3, 3), 2, 1) == (oc, OcTile(r=1, rw=14, nv=1))
    assert chosen((1, 256, 14, 14), (256, 256, 3, 3), 1, 1) == (oc, OcTile(r=1, rw=14, nv=1))
    assert chosen((1, 512, 7, 7), (512, 512, 3, 3), 1, 1) == (oc, OcTile(r=1, rw=7, nv=2))
    assert chosen((1, 64, 56, 56), (128, 64, 1, 1), 2, 0) is None      # 1x1: no im2col to save
    assert chosen((1, 8, 62, 62), (8, 8, 3, 3), 1, 1) == ("DirectConv", None)   # 8 of 16 channels
    assert chosen((1, 8, 9, 9), (5, 8, 3, 3), 1, 1) is None


@pytest.mark.parametrize("kind", ["rows", "oc"])
def test_tile_loop_has_no_spills(kind):
    g = ConvGeometry(c=16, h=20, w=56, m=32, kh=3, kw=3, oh=20, ow=56, pt=1, pl=1)
    if kind == "rows":
        k = DirectConv(g, DirectConvConfig.for_host(), Epilogue("relu"), has_bias=True)
        per_tap = k.config.mr * k.config.nv
    else:
        k = DirectConvOC(g, tile_for(g, llvm_target.host_cpu().f32_lanes), Epilogue("relu"), has_bias=True)
        per_tap = k.tile.positions * k.tile.nv
    asm = llvm_target.emit_assembly(k.ir())
    body = asm[asm.index(k.name + ".tile:"):]
    body = body[:body.index(".Lfunc_end")]
    # the reduction loop: the basic block with the most FMAs (a whole channel's taps)
    blocks = re.split(r"\n\.LBB\w+:|\n\tj\w+\t[^\n]*", body)
    hot = max(blocks, key=lambda blk: len(re.findall(r"vfmadd", blk)))
    assert len(re.findall(r"vfmadd", hot)) >= 9 * per_tap
    assert not re.search(r"\(%r[sb]p\b", hot), "stack accesses (spills) in the reduction loop"


def test_layers_of_one_family_share_one_function(always_direct):
    """Two 3x3 convs of different sizes and the same register tile: one generated function, its
    sizes read from each call's dims; both results right."""
    rng = np.random.default_rng(4)
    g = Graph()
    x = g.add_input("x", TensorType((1, 4, 12, 28), "float32"))
    w1 = g.add_const((rng.standard_normal((16, 4, 3, 3)) / 6).astype(np.float32))
    w2 = g.add_const((rng.standard_normal((32, 16, 3, 3)) / 12).astype(np.float32))
    y = g.op("relu", [g.op("conv", [x, w1], {"pads": [1, 1, 1, 1]})])
    y = g.op("relu", [g.op("conv", [y, w2], {"pads": [1, 1, 1, 1]})])
    g.set_outputs([y])
    xv = rng.standard_normal((1, 4, 12, 28)).astype(np.float32)
    m = irgraph.compile(g, target="cpu", opt_level=0, num_threads=1)
    np.testing.assert_allclose(m.run(xv)[0], irgraph.compile(g).run(xv)[0], rtol=1e-4, atol=1e-5)
    text = m._run.last.llvm_ir
    assert always_direct["direct"] == 2
    assert len(re.findall(r"define internal void @\"?irg_conv[\w.]*\.tile\"?\(", text)) == 1
