"""The errors users see. Every one names the model element at fault and, where known, a fix."""
from __future__ import annotations


class IrgraphError(Exception):
    """Base of every user-facing irgraph error.

    The message is assembled from the parts given, so every error reads the same way:
    ``node 'conv1' (op Conv, opset 13), input 'W': expected shape (64, 3, 7, 7), got (64, 3, 5, 5)``.
    """

    def __init__(self, message: str, *, node: str | None = None, op: str | None = None,
                 opset: int | None = None, input: str | None = None, expected=None,
                 actual=None, hint: str | None = None):
        self.message = message
        self.node = node
        self.op = op
        self.opset = opset
        self.input = input
        self.expected = expected
        self.actual = actual
        self.hint = hint
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.node is not None:
            where.append(f"node {self.node!r}")
        if self.op is not None:
            where.append(f"op {self.op}" + (f", opset {self.opset}" if self.opset is not None else ""))
        if self.input is not None:
            where.append(f"input {self.input!r}")
        text = self.message
        if where:
            text = ", ".join(where) + ": " + text
        if self.expected is not None and self.actual is not None:
            text += f" (expected {self.expected}, got {self.actual})"
        elif self.expected is not None:
            text += f" (expected {self.expected})"
        elif self.actual is not None:
            text += f" (got {self.actual})"
        if self.hint:
            text += f"; {self.hint}"
        return text

    def with_context(self, **ctx) -> "IrgraphError":
        """Fill in context fields that are still unset (used when an error crosses a layer)."""
        for k, v in ctx.items():
            if getattr(self, k, None) is None and v is not None:
                setattr(self, k, v)
        self.args = (self._format(),)
        return self

    def __str__(self) -> str:
        return self._format()


class ModelImportError(IrgraphError):
    """A model file or proto could not be read or converted."""


class UnsupportedOpError(ModelImportError):
    """The model uses operators irgraph does not implement; lists all of them at once."""


class ShapeError(IrgraphError):
    """Shapes or dtypes of a node's inputs do not fit the op."""


class VerifyError(IrgraphError):
    """The graph breaks an IR invariant (SSA, types, acyclicity)."""


class CompileError(IrgraphError):
    """A graph could not be compiled for the requested target."""


class InputError(IrgraphError):
    """Inputs given to a compiled model do not match its signature."""


class ExecutionError(IrgraphError):
    """A node failed while running."""
