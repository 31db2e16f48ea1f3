"""--bisect-passes: the first pass whose result differs from -O0 is named, whatever way it breaks
(wrong numerics, a crash, an invalid graph, NaNs), tolerances are honoured, the caller's graph is
untouched, and a correct pipeline reports that no pass changed the outputs."""
from __future__ import annotations

import numpy as np
import pytest

import irgraph
import models
from irgraph import Graph, TensorType
from irgraph.dtype import float32
from irgraph.passes import PassContext
from irgraph.passes.bisect import bisect_passes, compare_outputs
from irgraph.passes.registry import Pass


def _mlp():
    m = models.mlp(sizes=(8, 16, 16, 4))
    return irgraph.to_graph(m), models.feeds(m, {"N": 3}, seed=0)


def _ok(name):
    """A harmless pass (changes nothing)."""
    return Pass(name, lambda g, ctx: False)


def _first_op_becomes(old, new):
    """A pass that turns the first ``old`` node into ``new`` (same types, different values)."""
    def rename(g, ctx):
        for n in g.nodes:
            if n.op == old:
                n.op = new
                return True
        return False
    return rename


# deliberately wrong: the first bias add becomes a subtraction
_add_becomes_sub = _first_op_becomes("add", "sub")


def _scale_output(factor):
    def scale(g, ctx):
        out = g.outputs[0]
        g.set_outputs([g.op("mul", [out, g.add_const(np.array(factor, np.float32), "factor")])])
        return True
    return scale


WRONG = Pass("add_becomes_sub", _add_becomes_sub)


def test_names_the_first_wrong_pass_in_the_middle_of_a_pipeline():
    g, feeds = _mlp()
    before = str(g)
    plist = [_ok("first"), "eliminate_dead_code", WRONG, _ok("after"), Pass("also_wrong", _scale_output(2.0))]
    res = bisect_passes(g, feeds, passes=plist)
    assert res.changed and res.culprit == "add_becomes_sub" and res.index == 2
    assert res.reason == "changed the outputs"
    assert [d.name for d in res.diffs] == ["logits"] and res.diffs[0].max_abs > 1e-3
    # the passes after the culprit are not run
    assert [r.name for r in res.records] == ["first", "eliminate_dead_code", "add_becomes_sub"]
    text = res.summary()
    assert "first pass that changed the outputs: 'add_becomes_sub' (#3 of 5)" in text
    assert "-add×1" in text and "+sub×1" in text
    assert "passes before it agree with -O0: first, eliminate_dead_code" in text
    assert str(g) == before  # the caller's graph is not modified


def test_a_correct_pipeline_reports_no_pass_changed_the_outputs():
    g, feeds = _mlp()
    res = bisect_passes(g, feeds, passes=[_ok("a"), "eliminate_dead_code", _ok("b")])
    assert not res.changed and res.culprit is None
    assert res.summary().startswith("no pass changed the outputs: 3 passes checked")


def test_tolerance_is_respected():
    g, feeds = _mlp()
    tiny = [Pass("tiny_rescale", _scale_output(1.0 + 1e-6))]
    assert not bisect_passes(g, feeds, passes=tiny, rtol=1e-4, atol=1e-5).changed
    res = bisect_passes(g, feeds, passes=tiny, rtol=1e-8, atol=0.0)
    assert res.culprit == "tiny_rescale" and res.diffs[0].max_rel == pytest.approx(1e-6, rel=0.05)


def test_crash_invalid_graph_and_nan_are_named():
    g, feeds = _mlp()

    def crash(g, ctx):
        raise ZeroDivisionError("boom")

    def scramble(g, ctx):
        g.nodes.reverse()  # values used before they are defined
        return True

    def nan(g, ctx):
        out = g.outputs[0]
        g.set_outputs([g.op("mul", [out, g.add_const(np.array(np.nan, np.float32), "nan")])])
        return True

    res = bisect_passes(g, feeds, passes=["eliminate_dead_code", Pass("crash", crash)])
    assert res.culprit == "crash" and res.reason.startswith("raised an error") and "boom" in res.reason
    res = bisect_passes(g, feeds, passes=[Pass("scramble", scramble)])
    assert res.culprit == "scramble" and "verifier rejects" in res.reason
    res = bisect_passes(g, feeds, passes=[Pass("nan", nan)])
    assert res.culprit == "nan" and "NaN" in res.diffs[0].describe()


def test_the_first_difference_is_named_even_when_a_later_pass_hides_it():
    g, feeds = _mlp()
    res = bisect_passes(g, feeds, passes=[WRONG, Pass("undo", _first_op_becomes("sub", "add"))])
    assert res.culprit == "add_becomes_sub"


def test_compare_outputs_checks_shape_dtype_and_values():
    a = np.array([1.0, 2.0, np.inf], np.float32)
    diffs, worst = compare_outputs([a], [a.copy()], ["y"], 1e-4, 1e-5)
    assert diffs == [] and worst == 0.0
    diffs, _ = compare_outputs([a[:2]], [a], ["y"], 1e-4, 1e-5)
    assert "instead of float32[3]" in diffs[0].describe()
    diffs, _ = compare_outputs([a.astype(np.float64)], [a], ["y"], 1e-4, 1e-5)
    assert "float64[3] instead of float32[3]" in diffs[0].describe()
    diffs, _ = compare_outputs([np.array([1.0, 2.001, np.inf], np.float32)], [a], ["y"], 1e-4, 1e-5)
    assert diffs[0].mismatched == 1 and diffs[0].max_abs == pytest.approx(1e-3, rel=1e-3)
    diffs, _ = compare_outputs([np.array([1.0, 2.0, -np.inf], np.float32)], [a], ["y"], 1e-4, 1e-5)
    assert diffs[0].mismatched == 1


def test_verification_runs_after_every_pass_even_without_asking():
    g = Graph("chain")
    x = g.add_input("x", TensorType((4,), float32))
    g.set_outputs([g.op("relu", [g.op("exp", [x])])])

    def scramble(g, ctx):
        g.nodes.reverse()
        return True
    res = bisect_passes(g, [np.ones(4, np.float32)], passes=[Pass("scramble", scramble)],
                        ctx=PassContext(verify=False))
    assert res.culprit == "scramble" and "verifier rejects" in res.reason


@pytest.mark.parametrize("name", ["mlp", "resnet", "bert_layer"])
def test_the_real_O2_pipeline_changes_no_outputs(name):
    m = models.ALL[name]()
    res = bisect_passes(irgraph.to_graph(m), models.feeds(m, {"N": 2, "S": 5}, seed=1), level=2)
    assert not res.changed, res.summary()
