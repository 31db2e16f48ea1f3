"""Dead code elimination: nodes whose outputs nobody reads, and constants nobody uses."""
from __future__ import annotations

from .registry import register_pass


@register_pass("eliminate_dead_code", ensures={"no_dead_code"},
               description="drop nodes whose outputs nobody reads, and unused constants")
def eliminate_dead_code(graph, ctx) -> bool:
    changed = graph.remove_unused() > 0
    for n in graph.nodes:
        for sg in n.subgraphs():
            changed |= sg.remove_unused() > 0
    return changed
