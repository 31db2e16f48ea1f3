"""plan_memory: kernel order, liveness, in-place reuse, one arena — checked by the validator and by
running the interpreter over the arena (an overlap corrupts results)."""
from __future__ import annotations

import copy
import functools
import json

import numpy as np
import pytest

import irgraph
import models
from irgraph import Graph, TensorType, run_graph
from irgraph.dtype import float32, int64
from irgraph.errors import CompileError, ExecutionError, InputError, VerifyError
from irgraph.passes import PassContext, all_passes, pipeline, run_passes
from irgraph.passes.group import make_group
from irgraph.passes.memory_arena import run_with_arena
from irgraph.passes.memory_plan import validate_plan
from irgraph.passes.plan_memory import build_plan
from passcheck import ATOL, RTOL, assert_outputs_match


def _plan(g: Graph, dims=None, **options) -> Graph:
    opts = {"plan_memory.dims": dims or {}}
    opts.update({f"plan_memory.{k}": v for k, v in options.items()})
    g, report = run_passes(g, ["plan_memory"], PassContext(verify=True, options=opts))
    assert report.records[0].name == "plan_memory"
    return g


def _check_numerics(g: Graph, feeds) -> None:
    assert_outputs_match(run_with_arena(g, feeds), run_graph(g, feeds))


@functools.lru_cache(maxsize=None)
def _model(name: str, **kw):
    """Models are built once per session (ResNet-18's weights take a while to draw)."""
    return getattr(models, name)(**kw)


MODELS = {
    "resnet18_64": (lambda: _model("resnet18", image=64), {"N": 2}),
    "resnet_cifar": (lambda: models.resnet(), {"N": 3}),
    "bert_encoder_small": (lambda: models.bert_encoder(layers=2, hidden=64, heads=4), {"N": 2, "S": 8}),
    "bert_layer": (lambda: models.bert_layer(), {"N": 1, "S": 5}),
    "mlp": (lambda: models.mlp(), {"N": 4}),
    "lstm": (lambda: models.lstm(), {"N": 3}),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_plans_are_valid_and_run_over_the_arena(name):
    build, dims = MODELS[name]
    m = build()
    g = _plan(irgraph.to_graph(m), dims)
    plan = g.meta["memory_plan"]
    validate_plan(g)
    json.loads(json.dumps(plan))                           # plain data for backends and --json
    assert plan["order"] == [n.name for n in g.nodes]      # the graph is in planned order
    assert plan["dims"] == dims
    assert plan["lower_bound_bytes"] <= plan["peak_bytes"] <= plan["naive_bytes"]
    # every intermediate has a slot; graph outputs are in the arena and live to the end
    produced = {o.name for n in g.nodes for o in n.outputs}
    assert produced == set(plan["values"]) and plan["dynamic"] == []
    for v in g.outputs:
        assert plan["values"][v.name]["last"] == len(g.nodes) - 1
    _check_numerics(g, models.feeds(m, dims, seed=1))


@pytest.mark.parametrize("image", [64, 224])
def test_resnet18_peak_near_lower_bound(image):
    m = _model("resnet18", image=image)
    g = _plan(irgraph.to_graph(m), {"N": 1})
    p = g.meta["memory_plan"]
    validate_plan(g)
    assert p["peak_bytes"] <= 1.05 * p["lower_bound_bytes"]
    assert p["peak_bytes"] <= 0.5 * p["naive_bytes"]
    # the stem conv's output (64×112×112 floats at 224) bounds the peak from below
    stem = 64 * (image // 2) ** 2 * 4
    assert p["lower_bound_bytes"] >= 2 * stem   # conv output and batch-norm output live together
    _check_numerics(g, models.feeds(m, {"N": 1}, seed=2))


@pytest.mark.parametrize("dims", [{}, {"N": 1, "S": 128}], ids=["default_dims", "seq128"])
def test_bert_encoder_peak_near_lower_bound(dims):
    m = _model("bert_encoder")
    g = _plan(irgraph.to_graph(m), dims)
    p = g.meta["memory_plan"]
    validate_plan(g)
    assert p["dims"] == {"N": 1, "S": 1, **dims}           # unbound symbols default to 1
    assert p["peak_bytes"] <= 1.05 * p["lower_bound_bytes"]
    assert p["peak_bytes"] <= 0.5 * p["naive_bytes"]
    assert p["inplace"] and p["views"]                     # GELU/LN chains in place, reshapes as views
    _check_numerics(g, models.feeds(m, p["dims"], seed=3))


# ---- hand-built graphs: sharing rules -----------------------------------------------------------
def _plan_checked(g: Graph, dims=None, feed_shape=(4, 64), **options):
    """Plan, validate the plan and run the interpreter over the arena; return the graph and plan."""
    g = _plan(g, dims, **options)
    validate_plan(g)
    _check_numerics(g, _feed(feed_shape))
    return g, g.meta["memory_plan"]


def _x(g: Graph, shape=(4, 64)):
    return g.add_input("x", TensorType(shape, float32))


def _feed(shape=(4, 64), seed=0):
    return [np.random.default_rng(seed).standard_normal(shape).astype(np.float32)]


def test_elementwise_chain_runs_in_place_in_one_buffer():
    g = Graph()
    x = _x(g)
    a = g.op("exp", [x], name="a")          # x is a graph input: not in the arena, so a is new
    b = g.op("sigmoid", [a], name="b")
    c = g.op("tanh", [b], name="c")
    d = g.op("neg", [c], name="d")
    g.set_outputs([d])
    g, p = _plan_checked(g)
    assert p["inplace"] == {"b": "a", "c": "b", "d": "c"}
    assert len(p["buffers"]) == 1 and p["buffers"][0]["values"] == ["a", "b", "c", "d"]
    assert p["peak_bytes"] == p["lower_bound_bytes"] == 4 * 64 * 4
    assert p["naive_bytes"] == 4 * 4 * 64 * 4


def test_lower_bound_and_in_place_by_hand():
    g = Graph()
    x = _x(g, (256,))
    a = g.op("exp", [x], name="a")
    b = g.op("sin", [x], name="b")
    c = g.op("add", [a, b], name="c")       # a and b both die here: c takes one of them
    g.set_outputs([c])
    g = _plan(g)
    p = g.meta["memory_plan"]
    assert p["naive_bytes"] == 3 * 1024
    assert p["lower_bound_bytes"] == p["peak_bytes"] == 2 * 1024
    assert p["inplace"] == {"c": "a"}
    assert p["values"]["a"]["offset"] != p["values"]["b"]["offset"]
    assert all(v["offset"] % 64 == 0 for v in p["values"].values())
    _check_numerics(g, _feed((256,)))


def test_no_in_place_over_an_input_that_is_still_needed():
    g = Graph()
    x = _x(g)
    a = g.op("exp", [x], name="a")
    b = g.op("relu", [a], name="b")         # a is read again below: b may not overwrite it
    c = g.op("mul", [a, b], name="c")       # both die here
    g.set_outputs([c])
    g, p = _plan_checked(g, reorder=False)
    assert "b" not in p["inplace"] and p["inplace"]["c"] in ("a", "b")
    assert p["values"]["a"]["offset"] != p["values"]["b"]["offset"]


def test_no_in_place_for_other_kernels_sizes_or_outputs():
    g = Graph()
    x = _x(g, (8, 16))
    a = g.op("exp", [x], name="a")
    s = g.op("softmax", [a], {"axis": -1}, name="s")             # composite: never in place
    w = g.add_const(np.ones((16, 16), np.float32), "w")
    m = g.op("matmul", [s, w], name="m")                          # contraction: never in place
    axes = g.add_const(np.array([1], np.int64), "axes")
    r = g.op("reduce_sum", [m, axes], {"keepdims": 1}, name="r")  # [8,1]
    e = g.op("add", [r, m], name="e")       # r dies but is smaller (broadcast): e may take m only
    out = g.op("relu", [e], name="out")     # e is a graph output below: never overwritten
    g.set_outputs([e, out])
    g, p = _plan_checked(g, reorder=False, feed_shape=(8, 16))
    assert p["inplace"] == {"e": "m"}
    assert p["values"]["out"]["offset"] != p["values"]["e"]["offset"]


def test_reshape_is_a_view_of_its_input():
    g = Graph()
    x = _x(g, (4, 6))
    a = g.op("exp", [x], name="a")
    shape = g.add_const(np.array([2, 12], np.int64), "shape")
    r = g.op("reshape", [a, shape], name="r")
    b = g.op("sin", [a], name="b")          # a still read after the reshape: the view shares it
    c = g.op("add", [r, g.op("reshape", [b, shape], name="rb")], name="c")
    g.set_outputs([c])
    g = _plan(g, reorder=False)
    p = g.meta["memory_plan"]
    assert p["views"] == {"r": "a", "rb": "b"}
    assert p["values"]["r"]["offset"] == p["values"]["a"]["offset"]
    assert p["values"]["b"]["offset"] != p["values"]["a"]["offset"]
    validate_plan(g)
    _check_numerics(g, _feed((4, 6)))
    g2 = _plan(g, views=False, inplace=False)
    p2 = g2.meta["memory_plan"]
    assert p2["views"] == {} and p2["inplace"] == {}
    assert p2["peak_bytes"] > p["peak_bytes"]
    validate_plan(g2)
    _check_numerics(g2, _feed((4, 6)))


def _elementwise_group(group: str):
    g = Graph()
    x = _x(g, (4, 32))
    a = g.op("exp", [x], name="a")
    b = g.op("mul", [a, g.add_const(np.float32(0.5), "half")], name="b")
    c = g.op("tanh", [b], name="c")
    d = g.op("add", [c, a], name="d")
    g.set_outputs([d])
    make_group(g, [b.producer, c.producer, d.producer], group)
    return g


def test_fused_elementwise_group_writes_in_place():
    g, p = _plan_checked(_elementwise_group("elementwise"), feed_shape=(4, 32))
    fused = g.nodes[-1]
    assert fused.op == "fused" and p["inplace"] == {fused.outputs[0].name: "a"}
    assert p["peak_bytes"] == 4 * 32 * 4


def test_other_fused_groups_do_not_write_in_place():
    g = _plan(_elementwise_group("conv_epilogue"))
    assert g.meta["memory_plan"]["inplace"] == {}
    validate_plan(g)
    _check_numerics(g, _feed((4, 32)))


def test_multi_output_group_with_a_broadcast_output_is_not_in_place():
    # out2 = relu(b[32]) is rewritten at every row of the [4,32] iteration space: writing it over
    # b in place would feed later rows relu(b) instead of b
    g = Graph()
    x = _x(g, (4, 32))
    y = g.add_input("y", TensorType((32,), float32))
    a = g.op("exp", [x], name="a")
    b = g.op("sin", [y], name="b")
    out2 = g.op("relu", [b], name="out2")
    out1 = g.op("add", [a, out2], name="out1")
    g.set_outputs([out1, out2])
    make_group(g, [out2.producer, out1.producer], "elementwise")
    g = _plan(g)
    p = g.meta["memory_plan"]
    assert "out2" not in p["inplace"]
    validate_plan(g)
    _check_numerics(g, {"x": _feed((4, 32))[0], "y": _feed((32,), seed=1)[0]})


# ---- the kernel order ---------------------------------------------------------------------------
def _branches_written_breadth_first(k=4, n=1024):
    """k independent big branches, each reduced to a scalar; written all-expansions-first."""
    g = Graph()
    x = _x(g, (n,))
    axes = g.add_const(np.array([0], np.int64), "axes")
    bigs = [g.op("exp", [g.op("mul", [x, g.add_const(np.float32(i + 1), f"c{i}")], name=f"m{i}")],
                 name=f"e{i}") for i in range(k)]
    sums = [g.op("reduce_sum", [e, axes], {"keepdims": 1}, name=f"s{i}") for i, e in enumerate(bigs)]
    acc = sums[0]
    for i, s in enumerate(sums[1:]):
        acc = g.op("add", [acc, s], name=f"acc{i}")
    g.set_outputs([acc])
    return g


def test_order_is_chosen_to_lower_the_peak():
    k, n = 4, 1024
    fixed = _plan(_branches_written_breadth_first(k, n), reorder=False).meta["memory_plan"]
    assert fixed["lower_bound_bytes"] >= k * n * 4          # all k expansions alive together
    g, p = _plan_checked(_branches_written_breadth_first(k, n), feed_shape=(n,))
    assert p["peak_bytes"] < 2 * n * 4 < fixed["peak_bytes"]   # one branch at a time
    assert p["order"] != fixed["order"] and p["order_strategy"] != "graph"
    assert p["order"] == [nd.name for nd in g.nodes]
    g.verify()


def test_work_only_on_constants_is_not_hoisted():
    # the MLP's weight transposes are ready at once; computing them early would keep them alive
    m = models.mlp()
    fixed = _plan(irgraph.to_graph(m), {"N": 1}, reorder=False).meta["memory_plan"]
    p = _plan(irgraph.to_graph(m), {"N": 1}).meta["memory_plan"]
    assert p["peak_bytes"] <= fixed["peak_bytes"]
    from irgraph.passes.memory_liveness import KernelGraph, assign_buffers, bind_types, lower_bound
    from irgraph.passes.memory_order import greedy_order, is_topological
    g = irgraph.to_graph(m)
    kg = KernelGraph(g, bind_types(g, {"N": 1}))
    order = greedy_order(kg, "net")
    assert is_topological(kg, order)
    assert lower_bound(assign_buffers(kg, order).buffers, len(order)) <= fixed["lower_bound_bytes"]


# ---- dims and dynamic sizes ---------------------------------------------------------------------
def test_symbolic_dims_are_bound_from_the_option():
    g = Graph()
    x = g.add_input("x", TensorType(("N", 64), float32))
    g.set_outputs([g.op("sin", [g.op("exp", [x], name="a")], name="b")])
    p1 = build_plan(g)                          # default: every symbol is 1
    p4 = build_plan(g, {"N": 4})
    assert p1["dims"] == {"N": 1} and p4["dims"] == {"N": 4}
    assert p1["values"]["a"]["shape"] == [1, 64] and p4["values"]["a"]["shape"] == [4, 64]
    assert p4["naive_bytes"] == 4 * p1["naive_bytes"] == 4 * 2 * 64 * 4
    g = _plan(g, {"N": 4})
    _check_numerics(g, _feed((4, 64)))
    with pytest.raises(InputError, match="memory plan"):
        run_with_arena(g, _feed((3, 64)))
    with pytest.raises(CompileError, match="non-negative int"):
        build_plan(g, {"N": "four"})


def test_data_dependent_sizes_are_left_dynamic():
    g = Graph()
    x = _x(g, (4, 8))
    nz = g.op("nonzero", [g.op("relu", [x], name="r")], name="nz")
    g.set_outputs([g.op("neg", [nz], name="out")])
    g, p = _plan_checked(g, feed_shape=(4, 8))
    assert set(p["dynamic"]) == {"nz", "out"} and set(p["values"]) == {"r"}


# ---- the validator and the arena runner catch broken plans --------------------------------------
def _two_live_values():
    g = Graph()
    x = _x(g, (16, 16))
    a = g.op("exp", [x], name="a")
    b = g.op("sin", [x], name="b")
    g.set_outputs([g.op("matmul", [a, b], name="c")])     # a and b are live together
    return _plan(g)


def _move(plan: dict, name: str, offset: int) -> dict:
    plan = copy.deepcopy(plan)
    plan["values"][name]["offset"] = offset
    for b in plan["buffers"]:
        if name in b["values"]:
            b["offset"] = offset
    return plan


def test_overlapping_live_values_are_caught():
    g = _two_live_values()
    good = g.meta["memory_plan"]
    validate_plan(g, good)
    bad = _move(good, "b", good["values"]["a"]["offset"])
    with pytest.raises(VerifyError, match="overlap"):
        validate_plan(g, bad)
    feed = _feed((16, 16))
    with pytest.raises(ExecutionError, match="overwritten"):
        run_with_arena(g, feed, bad)
    # without the read check the corruption shows in the results
    got = run_with_arena(g, feed, bad, check=False)[0]
    assert not np.allclose(got, run_graph(g, feed)[0], rtol=RTOL, atol=ATOL)


def test_validator_catches_other_defects():
    g = _two_live_values()
    good = g.meta["memory_plan"]
    off = max(v["offset"] for v in good["values"].values())
    with pytest.raises(VerifyError, match="multiple of 64"):
        validate_plan(g, _move(good, "a", off + 8))
    missing = copy.deepcopy(good)
    del missing["values"]["b"]
    with pytest.raises(VerifyError, match="no slot"):
        validate_plan(g, missing)
    swapped = copy.deepcopy(good)
    swapped["order"] = swapped["order"][::-1]
    with pytest.raises(VerifyError, match="before it is produced"):
        validate_plan(g, swapped)
    liar = copy.deepcopy(good)
    liar["lower_bound_bytes"] -= 64
    with pytest.raises(VerifyError, match="lower_bound_bytes"):
        validate_plan(g, liar)
    small = copy.deepcopy(good)
    small["arena_bytes"] = small["peak_bytes"] = good["arena_bytes"] - 64
    with pytest.raises(VerifyError, match="leaves the arena"):
        validate_plan(g, small)
    # claiming matmul writes its output over a (still live) input: not an elementwise kernel
    claim = _move(good, "c", good["values"]["a"]["offset"])
    claim["inplace"] = {"c": "a"}
    with pytest.raises(VerifyError, match="not elementwise"):
        validate_plan(g, claim)
    with pytest.raises(VerifyError, match="no memory plan"):
        validate_plan(Graph(), None)


def test_in_place_over_a_value_still_live_is_caught():
    g = Graph()
    x = _x(g)
    a = g.op("exp", [x], name="a")
    b = g.op("neg", [a], name="b")
    g.set_outputs([g.op("add", [a, b], name="c")])
    g = _plan(g, reorder=False)
    bad = _move(g.meta["memory_plan"], "b", g.meta["memory_plan"]["values"]["a"]["offset"])
    bad["inplace"]["b"] = "a"               # a is read again by c: b may not overwrite it
    with pytest.raises(VerifyError, match="overlap"):
        validate_plan(g, bad)
    with pytest.raises(ExecutionError, match="'a' was overwritten"):
        run_with_arena(g, _feed(), bad)


def test_reading_after_the_planned_last_use_is_caught():
    g = _two_live_values()
    bad = copy.deepcopy(g.meta["memory_plan"])
    for b in bad["buffers"]:
        if "a" in b["values"]:
            b["last"] = 0                   # freed (poisoned) before the matmul reads it
    with pytest.raises(ExecutionError, match="after the plan freed"):
        run_with_arena(g, _feed((16, 16)), bad)
    assert np.isnan(run_with_arena(g, _feed((16, 16)), bad, check=False)[0]).all()


# ---- after fusion -------------------------------------------------------------------------------
def _group_conv_epilogues(g: Graph) -> int:
    """Group each conv with the batch_norm/add/relu chain that only it feeds (what fuse_epilogues
    will do), so planning sees one kernel per conv."""
    users = g.users()
    count = 0
    for n in list(g.nodes):
        if n.op != "conv" or n not in g.nodes:
            continue
        members, cur = [n], n
        while True:
            nxt = users.get(cur.outputs[0], [])
            if len(nxt) != 1 or nxt[0].op not in ("batch_norm", "add", "relu") or cur.outputs[0] in g.outputs:
                break
            cur = nxt[0]
            members.append(cur)
        make_group(g, members, "conv_epilogue")
        users = g.users()
        count += 1
    return count


def test_grouped_resnet18_plans_and_runs():
    # at 224 (not 64) so the activations, not the 2 MB classifier-weight transpose that the raw
    # graph computes at run time (constant folding removes it at -O2), dominate the figures
    m = _model("resnet18", image=224)
    g = irgraph.to_graph(m)
    assert _group_conv_epilogues(g) == 20
    g = _plan(g, {"N": 1})
    p = g.meta["memory_plan"]
    validate_plan(g)
    assert p["peak_bytes"] <= 1.05 * p["lower_bound_bytes"] and p["peak_bytes"] <= 0.5 * p["naive_bytes"]
    _check_numerics(g, models.feeds(m, {"N": 1}, seed=4))


FUSION = ["fold_batch_norm", "fuse_epilogues", "fuse_reductions", "fuse_elementwise"]


@pytest.mark.parametrize("name,dims", [("resnet18", {"N": 1}), ("bert_encoder", {"N": 1, "S": 16})])
def test_after_the_o2_pipeline(name, dims):
    """The -O2 pipeline (the passes of it registered so far) ends with plan_memory."""
    names = [p for p in pipeline(2) if p in all_passes()]
    if not any(p in names for p in FUSION):
        pytest.skip("no fusion pass is registered yet")
    assert names[-1] == "plan_memory"
    m = _model("resnet18", image=224) if name == "resnet18" else _model("bert_encoder", layers=2, hidden=64)
    g0 = irgraph.to_graph(m)
    g, _ = run_passes(g0.copy(), names, PassContext(verify=True, options={"plan_memory.dims": dims}))
    p = g.meta["memory_plan"]
    validate_plan(g)
    assert len(g.nodes) < len(g0.nodes)
    assert p["peak_bytes"] <= 1.05 * p["lower_bound_bytes"] and p["peak_bytes"] <= 0.5 * p["naive_bytes"]
    feeds = models.feeds(m, dims, seed=5)
    assert_outputs_match(run_with_arena(g, feeds), run_graph(g0, feeds), types=False)


def test_plan_of_an_empty_graph():
    g = Graph()
    x = _x(g)
    g.set_outputs([x])
    g = _plan(g)
    p = g.meta["memory_plan"]
    assert p["arena_bytes"] == p["naive_bytes"] == p["lower_bound_bytes"] == 0 and p["order"] == []
    validate_plan(g)
    np.testing.assert_array_equal(run_with_arena(g, _feed())[0], _feed()[0])


def test_int64_inputs_stay_outside_the_arena():
    g = Graph()
    i = g.add_input("i", TensorType((6,), int64))
    g.set_outputs([g.op("add", [i, i], name="s")])
    g = _plan(g)
    assert set(g.meta["memory_plan"]["values"]) == {"s"}
    _check_numerics(g, [np.arange(6, dtype=np.int64)])


# ---- random graphs ------------------------------------------------------------------------------
_SHAPES = {"a": (4, 8), "b": (8, 4), "c": (32,)}


def _random_graph(seed: int) -> Graph:
    """A random DAG of elementwise ops, views, reductions, matmuls and fused elementwise groups
    over a few shapes, with several outputs (some of them intermediates read later)."""
    rng = np.random.default_rng(seed)
    g = Graph()
    pool = {"a": [g.add_input("x", TensorType(_SHAPES["a"], float32))], "b": [], "c": []}
    consts = {k: g.add_const(np.linspace(0.5, 1.5, int(np.prod(s)), dtype=np.float32).reshape(s), f"k{k}")
              for k, s in _SHAPES.items()}
    axes = g.add_const(np.array([1], np.int64), "axes")
    for i in range(int(rng.integers(8, 20))):
        kinds = [k for k in pool if pool[k]]
        k = kinds[int(rng.integers(len(kinds)))]
        v = pool[k][int(rng.integers(len(pool[k])))]
        r = rng.random()
        if r < 0.3:
            op = ["sin", "tanh", "neg", "relu", "sigmoid"][int(rng.integers(5))]
            pool[k].append(g.op(op, [v], name=f"{op}{i}"))
        elif r < 0.55:
            w = pool[k][int(rng.integers(len(pool[k])))] if rng.random() < 0.7 else consts[k]
            op = ["add", "mul", "sub"][int(rng.integers(3))]
            pool[k].append(g.op(op, [v, w], name=f"{op}{i}"))
        elif r < 0.75:
            to = [t for t in _SHAPES if t != k][int(rng.integers(2))]
            shape = g.add_const(np.array(_SHAPES[to], np.int64), f"shape{i}")
            pool[to].append(g.op("reshape", [v, shape], name=f"reshape{i}"))
        elif r < 0.88 and k == "a":
            s = g.op("reduce_sum", [v, axes], {"keepdims": 1}, name=f"sum{i}")
            pool["a"].append(g.op("sub", [v, s], name=f"center{i}"))
        elif k == "a" and pool["b"]:
            mm = g.op("matmul", [v, pool["b"][-1]], name=f"mm{i}")                    # [4,4]
            pool["a"].append(g.op("matmul", [mm, consts["a"]], name=f"mm2_{i}"))      # [4,8]
        else:
            pool[k].append(g.op("exp", [g.op("neg", [g.op("relu", [v], name=f"r{i}")], name=f"n{i}")],
                                name=f"e{i}"))
    produced = [o for n in g.nodes for o in n.outputs]
    outs = [produced[-1]] + [produced[int(j)] for j in rng.integers(len(produced), size=int(rng.integers(0, 3)))]
    g.set_outputs(list(dict.fromkeys(outs)))
    g.remove_unused()
    # fuse a few single-reader elementwise pairs into elementwise groups
    for _ in range(int(rng.integers(0, 3))):
        users = g.users()
        pairs = [(n, users[n.outputs[0]][0]) for n in g.nodes
                 if n.op in ("sin", "tanh", "neg", "relu", "sigmoid", "add", "mul", "sub", "exp")
                 and len(users.get(n.outputs[0], [])) == 1
                 and users[n.outputs[0]][0].op in ("sin", "tanh", "neg", "relu", "sigmoid", "add", "mul", "sub", "exp")]
        if not pairs:
            break
        make_group(g, list(pairs[int(rng.integers(len(pairs)))]), "elementwise")
    g.verify()
    return g


@pytest.mark.parametrize("seed", range(40))
def test_random_graphs(seed):
    g = _random_graph(seed)
    rng = np.random.default_rng(1000 + seed)
    options = {"reorder": bool(rng.integers(2)), "inplace": bool(rng.random() < 0.8),
               "views": bool(rng.random() < 0.8)}
    g = _plan(g, **options)
    p = g.meta["memory_plan"]
    validate_plan(g)
    assert p["lower_bound_bytes"] <= p["peak_bytes"] <= max(p["naive_bytes"], 0) + 64 * len(p["values"])
    _check_numerics(g, _feed((4, 8), seed))
