"""A tiny labelled image suite for tests: `count` noisy images of three kinds (brightness says the kind), captioned
and listed in a table, split half/quarter/quarter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_shapes_suite(folder: Path, count: int, size: tuple[int, int], evaluation: dict) -> Path:
    """Write the images (image i is (size[0] + i) × size[1] pixels), shapes.csv and suite.yaml with `evaluation`
    as its `eval` section (datasets: shapes); the suite's path."""
    rng = np.random.default_rng(0)
    rows = ["image,caption,label"]
    for index in range(count):
        kind = index % 3
        pixels = (rng.integers(0, 60, (size[0] + index, size[1], 3)) + 90 * kind).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
        rows.append(f"{index}.png,a shape of kind {kind},kind{kind}")
    (folder / "shapes.csv").write_text("\n".join(rows) + "\n")
    path = folder / "suite.yaml"
    path.write_text(json.dumps({
        "name": "shapes",
        "datasets": {"shapes": {"source": "table", "table": str(folder / "shapes.csv"), "label_column": "label",
                                "splits": {"train": 0.5, "val": 0.25, "test": 0.25}}},
        "eval": {"datasets": ["shapes"], **evaluation}}))
    return path
