"""Curation's caption kernels (the optional extension `_native`, src/transferlab/curate/_native.c: the caption
normaliser and the token matcher), or None where it is not built, or when the environment sets
TRANSFERLAB_PURE_PYTHON=1: then their pure-Python twins run, with the same results (to compare the two, or to
rule the extension out when something looks wrong). The tar kernels are data/tar/kernels.py's."""

from __future__ import annotations

import os

kernels = None
if os.environ.get("TRANSFERLAB_PURE_PYTHON") != "1":
    try:
        from transferlab.curate import _native as kernels
    except ImportError:  # no C compiler at install: the pure-Python twins
        kernels = None
