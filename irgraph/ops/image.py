"""Ops of the image family."""
from __future__ import annotations
