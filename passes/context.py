"""The context passes run under: opt level, disabled passes, verification and instruments.

Instruments watch passes run (timing, summaries, IR dumps, verification); see instruments.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PassContext:
    opt_level: int = 2
    disabled: set = field(default_factory=set)
    instruments: list = field(default_factory=list)
    verify: bool = False             # verify the graph after every pass (tests turn this on)
    options: dict = field(default_factory=dict)   # pass-specific knobs, e.g. {"fold_constants.max_bytes": 1 << 20}
    properties: set = field(default_factory=set)  # established by passes' ``ensures``

    def option(self, key: str, default=None):
        return self.options.get(key, default)
