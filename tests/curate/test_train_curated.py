"""curate → pretrain → eval: a curated pool trains directly, streamed, with the pool's class names."""

import json

import pytest

from tests.conftest import TINY, streamed_mnist5k
from transferlab.config import load_recipe
from transferlab.curate import Settings, curate
from transferlab.data.readers.bundled import DIGIT_NAMES
from transferlab.data.readers.webdataset import read_webdataset
from transferlab.train.loop import pretrain


@pytest.mark.slow
def test_a_curated_pool_pretrains_streamed_with_its_class_names(tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    overrides = streamed_mnist5k(pool)  # mnist5k as shards: .png, .txt, .json, .cls and classnames.txt
    metadata = tmp_path / "digits.txt"
    metadata.write_text("\n".join(DIGIT_NAMES) + "\n")
    record = curate(str(pool), tmp_path / "curated", Settings(metadata=metadata, cap=150), workers=2)
    assert 1000 < record["kept"] < 5000  # the cap balanced the ten digits
    assert (tmp_path / "curated" / "classnames.txt").read_text() == (pool / "classnames.txt").read_text()

    curated = [o.replace(f"shards={pool}", f"shards={tmp_path / 'curated'}") for o in overrides]
    recipe = load_recipe(None, [*TINY, *curated])
    spec = recipe.datasets["mnist5k"]
    data = read_webdataset(spec, "mnist5k", 28, 1, stream=True)
    assert data.streamed and len(data) == record["kept"] and data.classnames == DIGIT_NAMES
    run = tmp_path / "run"
    pretrain(recipe, run)
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == recipe.train.steps
    assert json.loads((run / "data_report.json").read_text())["training_stream"]["skipped"] == {}
