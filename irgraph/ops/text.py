"""Ops of the text family."""
from __future__ import annotations
