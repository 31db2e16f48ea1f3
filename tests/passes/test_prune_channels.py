"""prune_channels: whole channels leave producers and every consumer; the pruned graph computes
what the original computes with those channels silenced (weights and biases zeroed: the oracle),
residual-tied producers lose the same channels, dead channels leave exactly, and what cannot be
pruned is left alone with a reason."""
from __future__ import annotations

import numpy as np
import pytest
from passcheck import assert_outputs_match, run_pass

import models
from irgraph import Graph, TensorType, run_graph
from irgraph.api import to_graph
from irgraph.frontends import dsl
from irgraph.passes import PassContext, run_passes

RNG = np.random.default_rng(3)


def cleaned(g: Graph, extra=()) -> Graph:
    g, _ = run_passes(g, ["infer_shapes", "fold_constants", *extra], PassContext(verify=True))
    return g


def cnn_graph() -> Graph:
    model = dsl.Sequential(dsl.Conv2D(16, 3, padding="same", activation="relu"), dsl.MaxPool2D(),
                           dsl.Conv2D(32, 3, padding="same", activation="relu"), dsl.Flatten(), dsl.Dense(10))
    model.initialize(seed=0, input_specs=[(None, 1, 8, 8)])
    return cleaned(model.to_graph([(None, 1, 8, 8)]))


def prune(g: Graph, ratio: float):
    g2, rec = run_pass(g.copy(), "prune_channels", **{"prune.ratio": ratio})
    rep = g2.meta["prune_report"]
    return g2, rec, {tuple(e["producers"]): e for e in rep["groups"]}


def silenced(g: Graph, groups: dict) -> Graph:
    """The oracle: ``g`` with the dropped channels' weights, biases and batch-norm scale/shift
    zeroed, so they are zero wherever they are read (relu(0) = max_pool(0) = 0)."""
    h = g.copy()
    nodes = {n.name: n for n in h.nodes}
    users = h.users()

    def zero(n, i, idx, axis):
        a = np.array(n.inputs[i].const, copy=True)
        np.moveaxis(a, axis, 0)[idx] = 0
        n.inputs[i] = h.add_const(a, n.inputs[i].name + "_silenced")
    for e in groups.values():
        if e["status"] != "pruned":
            continue
        for name in e["producers"]:
            n = nodes[name]
            if n.op == "conv":
                zero(n, 1, e["drop"], 0)
                if len(n.inputs) > 2 and n.inputs[2] is not None:
                    zero(n, 2, e["drop"], 0)
            else:
                zero(n, 1, e["drop"], 1)
            for u in users.get(n.outputs[0], []):
                if u.op == "add" and u.inputs[1].const is not None:
                    zero(u, 1, e["drop"], u.inputs[1].const.ndim - 1)
                if u.op == "batch_norm":
                    zero(u, 1, e["drop"], 0)
                    zero(u, 2, e["drop"], 0)
    return h


def feeds(g: Graph, batch: int = 4):
    return [RNG.standard_normal([batch if not isinstance(d, int) else d for d in v.shape]).astype(np.float32)
            for v in g.inputs]


def check_oracle(g: Graph, g2: Graph, groups: dict) -> None:
    f = feeds(g)
    assert_outputs_match(run_graph(g2, f), run_graph(silenced(g, groups), f), rtol=1e-5, atol=1e-5)


def test_cnn_shrinks_every_consumer():
    g = cnn_graph()
    g2, rec, groups = prune(g, 0.3)
    assert rec.changed
    w = {n.name: n.inputs[1].const for n in g2.nodes if n.op in ("conv", "matmul")}
    assert w["0/conv"].shape == (11, 1, 3, 3)            # 16 - round(4.8)
    assert w["2/conv"].shape == (22, 11, 3, 3)           # 32 - round(9.6), and its input channels
    assert w["4/matmul"].shape == (22 * 16, 10)          # flatten: 16 rows per channel
    assert [v.shape for v in g2.outputs] == [v.shape for v in g.outputs]
    assert groups[("4/matmul",)]["status"] == "left alone"
    assert "graph output" in groups[("4/matmul",)]["reason"]
    # the dropped channels are those of smallest L1 norm
    orig = {n.name: n.inputs[1].const for n in g.nodes if n.op == "conv"}
    for name in ("0/conv", "2/conv"):
        norms = np.abs(orig[name]).reshape(orig[name].shape[0], -1).sum(axis=1)
        drop = groups[(name,)]["drop"]
        keep = np.setdiff1d(np.arange(norms.size), drop)
        assert norms[drop].max() <= norms[keep].min()
    check_oracle(g, g2, groups)


def test_gemm_chain_with_transposed_weights():
    g = cleaned(to_graph(models.mlp(sizes=(20, 16, 12, 3))))
    g2, _, groups = prune(g, 0.5)
    shapes = [n.inputs[1].const.shape for n in g2.nodes if n.op == "matmul"]
    assert shapes == [(20, 8), (8, 6), (6, 3)]
    check_oracle(g, g2, groups)


@pytest.mark.parametrize("fold", [True, False], ids=["folded_bn", "unfolded_bn"])
def test_resnet_residual_groups_pruned_together(fold):
    g = cleaned(to_graph(models.resnet(widths=(8, 16), blocks=2, image=8)), ["fold_batch_norm"] if fold else [])
    g2, _, groups = prune(g, 0.5)
    tied = [e for e in groups.values() if len(e["producers"]) > 1]
    assert len(tied) == 2 and all(e["status"] == "pruned" for e in tied)
    # stage 1: the stem and both blocks' second convs; stage 2: the shortcut conv and two more
    assert sorted(len(e["producers"]) for e in tied) == [3, 3]
    conv_out = {n.name: n.inputs[1].const.shape[0] for n in g2.nodes if n.op == "conv"}
    for e in tied:
        assert {conv_out[p] for p in e["producers"]} == {e["channels"] - e["removed"]}
    if not fold:
        assert any(n.op == "batch_norm" and n.inputs[1].shape == (4,) for n in g2.nodes)
    check_oracle(g, g2, groups)


def dead_channel_graph(consumer: str) -> tuple[Graph, np.ndarray]:
    """x -> conv(3 -> 8) + bias -> relu -> consumer, with channels 1, 4, 6 of all-zero weights and
    a positive bias: they carry relu(bias) > 0, which removal must fold into the consumer."""
    g = Graph("dead")
    x = g.add_input("x", TensorType(("N", 3, 6, 6), "float32"))
    w = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)
    dead = np.array([1, 4, 6])
    w[dead] = 0
    b = RNG.standard_normal(8).astype(np.float32)
    b[dead] = [0.5, 1.5, 0.25]
    y = g.op("relu", [g.op("conv", [x, g.add_const(w, "w0"), g.add_const(b, "b0")], {"pads": [1, 1, 1, 1]})])
    if consumer == "dense":
        y = g.op("reshape", [y, g.add_const(np.array([0, -1], np.int64), "flat")])
        y = g.op("matmul", [y, g.add_const(RNG.standard_normal((8 * 36, 5)).astype(np.float32), "w1")])
        y = g.op("add", [y, g.add_const(RNG.standard_normal(5).astype(np.float32), "b1")])
    else:
        pads = [1, 1, 1, 1] if consumer == "padded conv" else [0, 0, 0, 0]
        y = g.op("conv", [y, g.add_const(RNG.standard_normal((4, 8, 3, 3)).astype(np.float32), "w1")], {"pads": pads})
    g.set_outputs([y])
    return g, dead


@pytest.mark.parametrize("consumer", ["dense", "conv"])
def test_dead_channels_leave_exactly(consumer):
    g, dead = dead_channel_graph(consumer)
    g2, _, groups = prune(g, 3 / 8)
    e = groups[("conv",)]
    assert e["drop"] == dead.tolist() and e["dead"] == 3 and e["exact"]
    f = feeds(g)
    assert_outputs_match(run_graph(g2, f), run_graph(g, f), rtol=1e-5, atol=1e-5)


def test_dead_channels_into_a_padded_conv_are_reported_inexact():
    g, dead = dead_channel_graph("padded conv")
    g2, _, groups = prune(g, 3 / 8)
    e = groups[("conv",)]
    assert e["dead"] == 3 and not e["exact"]
    f = feeds(g)
    got, want = run_graph(g2, f)[0], run_graph(g, f)[0]
    # the interior (windows inside the image) is exact; the border saw zero padding
    np.testing.assert_allclose(got[:, :, 1:-1, 1:-1], want[:, :, 1:-1, 1:-1], rtol=1e-5, atol=1e-5)


def test_concat_and_graph_outputs_are_left_alone():
    g = Graph("concat")
    x = g.add_input("x", TensorType(("N", 3, 5, 5), "float32"))
    a = g.op("conv", [x, g.add_const(RNG.standard_normal((4, 3, 1, 1)).astype(np.float32), "wa")])
    b = g.op("conv", [x, g.add_const(RNG.standard_normal((4, 3, 1, 1)).astype(np.float32), "wb")])
    c = g.op("concat", [a, b], {"axis": 1})
    y = g.op("conv", [c, g.add_const(RNG.standard_normal((6, 8, 1, 1)).astype(np.float32), "wc")])
    g.set_outputs([y])
    g2, rec, groups = prune(g, 0.5)
    assert not rec.changed
    assert all(e["status"] == "left alone" for e in groups.values())
    assert "concat" in groups[("conv",)]["reason"] and "graph output" in groups[("conv_1",)]["reason"] \
        or "concat" in groups[("conv_1",)]["reason"]
    assert any("graph output" in e["reason"] for e in groups.values())


def test_at_least_one_channel_stays():
    g = cnn_graph()
    g2, _, groups = prune(g, 0.99)
    assert g2.nodes[0].inputs[1].const.shape[0] == 1
    check_oracle(g, g2, groups)


def test_alignment_keeps_multiples_of_it():
    g = cnn_graph()
    g2, rec = run_pass(g.copy(), "prune_channels", **{"prune.ratio": 0.3, "prune.align": 16})
    groups = {tuple(e["producers"]): e for e in g2.meta["prune_report"]["groups"]}
    # 16 channels keep 11.2 -> a multiple of 16 is all of them: left alone; 32 keep 22.4 -> 16
    assert groups[("0/conv",)]["status"] == "left alone" and "steps of 16" in groups[("0/conv",)]["reason"]
    assert [n.inputs[1].const.shape[0] for n in g2.nodes if n.op == "conv"] == [16, 16]
    check_oracle(g, g2, groups)


def test_dead_channels_in_consecutive_layers():
    # both groups compensate: the first into the second layer's biases, the second (whose dead
    # channels' biases that leaves unchanged) into the third's
    g = Graph("chain")
    x = g.add_input("x", TensorType(("N", 6), "float32"))
    y = x
    for i, (k, n) in enumerate(((6, 8), (8, 8), (8, 3))):
        w = RNG.standard_normal((k, n)).astype(np.float32)
        b = np.abs(RNG.standard_normal(n)).astype(np.float32)
        if i < 2:
            w[:, [2, 5]] = 0
        y = g.op("add", [g.op("matmul", [y, g.add_const(w, f"w{i}")]), g.add_const(b, f"b{i}")])
        if i < 2:
            y = g.op("relu", [y])
    g.set_outputs([y])
    g2, _, groups = prune(g, 0.25)
    assert [e["exact"] for e in groups.values() if e["status"] == "pruned"] == [True, True]
    f = feeds(g)
    assert_outputs_match(run_graph(g2, f), run_graph(g, f), rtol=1e-5, atol=1e-5)
