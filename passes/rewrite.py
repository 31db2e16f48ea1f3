"""The one pattern-rewrite engine local passes use: patterns plus a replacement, run to a fixpoint.

    from irgraph.passes.rewrite import Op, Var, Const, Rule, rewrite

    rules = [
        Rule("mul_by_one", Op("mul", Var("x"), Const(value=1.0)), lambda m, g: m["x"]),
        Rule("double_neg", Op("neg", Op("neg", Var("x"))), lambda m, g: m["x"]),
    ]
    changed = rewrite(graph, rules)

A pattern is a tree: ``Op(op, *inputs, attrs=..., where=..., name=..., single_use=...)`` matches
a node (``commutative=True`` also tries its two inputs swapped), ``Var(name, where=...)`` any
value, ``Const(name, value=..., where=...)`` a value known at compile time (a constant or a
known value). A name bound twice must bind the same value. The replacement gets the ``Match``
(``m["x"]`` the value bound to x, ``m.node("name")`` a bound node, ``m.root`` the matched node)
and the graph, builds new nodes with ``g.op(...)``, and returns the value (or list of values)
that replaces the root's outputs — or ``None`` to decline. New nodes inherit the matched
nodes' provenance (``meta["source"]``), the graph is re-sorted topologically, and dead nodes
are dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from irgraph.graph import Graph, Node, Value
from irgraph.ops.evaluate import known_value


class Pattern:
    name: str | None = None


class Var(Pattern):
    def __init__(self, name: str | None = None, where: Callable[[Value], bool] | None = None):
        self.name = name
        self.where = where


class Const(Pattern):
    """A compile-time-known value; ``value`` matches when every element equals it (broadcast)."""

    def __init__(self, name: str | None = None, value: Any = None, where: Callable[[np.ndarray], bool] | None = None):
        self.name = name
        self.value = value
        self.where = where


class Op(Pattern):
    def __init__(self, op: str | tuple, *inputs: Pattern, attrs: dict | None = None,
                 where: Callable[[Node], bool] | None = None, name: str | None = None,
                 single_use: bool = False, commutative: bool = False):
        self.ops = (op,) if isinstance(op, str) else tuple(op)
        self.inputs = inputs
        self.attrs = attrs or {}
        self.where = where
        self.name = name
        self.single_use = single_use
        self.commutative = commutative


@dataclass
class Rule:
    name: str
    pattern: Op
    replace: Callable[["Match", Graph], Any]


@dataclass
class Match:
    root: Node
    values: dict = field(default_factory=dict)
    nodes: dict = field(default_factory=dict)
    matched: list = field(default_factory=list)

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def const(self, name: str) -> np.ndarray:
        return known_value(self.values[name])


class _Matcher:
    def __init__(self, users: dict, outputs: set):
        self.users = users
        self.outputs = outputs

    def match_value(self, pat: Pattern, v: Value | None, m: Match) -> bool:
        if v is None:
            return False
        if isinstance(pat, Var):
            if pat.where is not None and not pat.where(v):
                return False
            return self._bind(pat.name, v, m)
        if isinstance(pat, Const):
            a = known_value(v)
            if a is None:
                return False
            if pat.value is not None:
                try:
                    if not (a.size and np.all(a == np.asarray(pat.value, dtype=a.dtype))):
                        return False
                except (TypeError, ValueError, OverflowError):
                    return False  # e.g. value=-1 against a uint8 constant: not a match
            if pat.where is not None and not pat.where(a):
                return False
            return self._bind(pat.name, v, m)
        if isinstance(pat, Op):
            n = v.producer
            if n is None or v.graph is None or n not in self.users.get("__nodes__", ()):
                return False
            if pat.name and m.values.get(pat.name, v) is not v:
                return False  # a name bound twice must bind the same value
            if not self.match_node(pat, n, m):
                return False
            if pat.name:
                m.values[pat.name] = v
            return True
        raise TypeError(f"not a pattern: {pat!r}")

    def match_node(self, pat: Op, n: Node, m: Match) -> bool:
        if n.op not in pat.ops:
            return False
        for k, want in pat.attrs.items():
            have = n.attrs.get(k)
            if callable(want) and not isinstance(want, (int, float, str, tuple)):
                if not want(have):
                    return False
            elif have != want:
                return False
        if pat.where is not None and not pat.where(n):
            return False
        if pat.single_use and m.matched:  # the root may have many users; inner nodes may not
            if sum(len(self.users.get(o, ())) for o in n.outputs) + sum(o in self.outputs for o in n.outputs) != 1:
                return False
        orders = [list(n.inputs)]
        if pat.commutative and len(n.inputs) == 2:
            orders.append([n.inputs[1], n.inputs[0]])
        for ins in orders:
            if pat.inputs and len(ins) < len(pat.inputs):
                continue
            trial = Match(m.root, dict(m.values), dict(m.nodes), list(m.matched) + [n])
            if pat.name:
                trial.nodes[pat.name] = n
            if all(self.match_value(p, v, trial) for p, v in zip(pat.inputs, ins)):
                m.values, m.nodes, m.matched = trial.values, trial.nodes, trial.matched
                return True
        return False

    @staticmethod
    def _bind(name, v, m: Match) -> bool:
        if name is None:
            return True
        have = m.values.get(name)
        if have is None:
            m.values[name] = v
            return True
        return have is v


def rewrite(graph: Graph, rules: list[Rule], max_sweeps: int = 20, log: list | None = None) -> bool:
    """Apply ``rules`` until none matches (or ``max_sweeps``); returns whether anything changed.
    ``log`` (a list) receives the name of every rule applied, in order."""
    by_op: dict[str, list[Rule]] = {}
    for r in rules:
        for op in r.pattern.ops:
            by_op.setdefault(op, []).append(r)
    changed_any = False
    for _ in range(max_sweeps):
        changed = False
        users = graph.users()
        users["__nodes__"] = set(graph.nodes)
        outputs = set(graph.outputs)
        matcher = _Matcher(users, outputs)
        dead: set = set()
        for n in list(graph.nodes):
            if n in dead:
                continue
            for r in by_op.get(n.op, ()):
                m = Match(n)
                if r.pattern.name:
                    m.nodes[r.pattern.name] = n
                if not matcher.match_node(r.pattern, n, m):
                    continue
                if any(x in dead for x in m.matched):
                    continue
                before = len(graph.nodes)
                res = r.replace(m, graph)
                if res is None:
                    del graph.nodes[before:]  # the rule declined; drop anything it built
                    continue
                new_vals = [res] if isinstance(res, Value) else list(res)
                if len(new_vals) != len(n.outputs):
                    raise ValueError(f"rule {r.name!r} returned {len(new_vals)} values for {len(n.outputs)} outputs")
                src = []
                for x in m.matched:
                    for s in x.meta.get("source", [x.name]):
                        if s not in src:
                            src.append(s)
                for new in graph.nodes[before:]:
                    new.meta.setdefault("source", list(src))
                for old, new in zip(n.outputs, new_vals):
                    if old is not new:
                        if new.dtype is not old.dtype:
                            raise ValueError(f"rule {r.name!r} changed the dtype of {old.name!r} "
                                             f"from {old.dtype.name} to {new.dtype.name}")
                        graph.replace_uses(old, new)
                dead.add(n)
                if log is not None:
                    log.append(r.name)
                changed = True
                break
        if not changed:
            break
        changed_any = True
        graph.toposort()
        graph.remove_unused()
    return changed_any
