"""The ``ai.irgraph`` domain: core ops exported verbatim by the exporter import back 1:1."""
from __future__ import annotations
