"""Runs register themselves in <out>/../runs.jsonl with what scaling laws need."""

import json

import pytest

from transferlab.config import load_recipe
from transferlab.models.dual_encoder import DualEncoder
from transferlab.train.run_summary import forward_flops_per_sample, register_run


@pytest.mark.parametrize("width", [4, 8])
def test_flops_of_the_cnn_and_projection_match_the_closed_form(width):
    recipe = load_recipe(None, ["model.image.name=cnn-tiny", f"model.image.options.width={width}",
                                "model.embed_dim=16"])  # the text tower is locked MiniLM: no per-sample FLOPs
    w, conv = width, lambda c_in, c_out, side: 2 * c_in * c_out * 9 * side * side
    expected = (conv(1, w, 28) + conv(w, w, 28) + conv(w, 2 * w, 14) + conv(2 * w, 2 * w, 14)
                + conv(2 * w, 4 * w, 7) + 2 * 4 * w * 16)
    assert forward_flops_per_sample(DualEncoder(recipe.model)) == expected


def test_a_run_appends_its_line_beside_its_directory(tmp_path):
    recipe = load_recipe(None, ["model.image.name=cnn-tiny", "model.text.name=text-transformer-tiny",
                                "model.text.locked=false", "train.steps=5", "train.batch_size=32"])
    model = DualEncoder(recipe.model)
    run_dir = tmp_path / "runs" / "exp1"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text('{"step": 4, "loss": 3.5}\n{"step": 5, "loss": 3.25}\n')
    results = {"tasks": [{"task": "linear_probe", "dataset": "digits", "metrics": {"acc1": 0.9, "weight_decay": 0.1}}]}
    for _ in range(2):
        table = register_run(run_dir, model, recipe, results)
    assert table == (tmp_path / "runs" / "runs.jsonl").resolve()
    lines = [json.loads(line) for line in table.read_text().splitlines()]
    assert len(lines) == 2
    line = lines[0]
    assert line["params"] == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert line["samples"] == 5 * 32 and line["loss"] == 3.25
    image_only = DualEncoder(load_recipe(None, ["model.image.name=cnn-tiny"]).model)
    assert line["flops"] > 3 * forward_flops_per_sample(image_only) * 160  # the trainable text tower counts too
    assert line["linear_probe/digits/acc1"] == 0.9 and line["run"] == str(run_dir.resolve())
