"""RankMe of a fixed probe set logged during pretraining, to pick a checkpoint without labels."""

import pytest
import torch

from transferlab.config import load_recipe
from transferlab.data.readers.sources import load_splits
from transferlab.data.stream.permutation import Permutation
from transferlab.errors import UserError
from transferlab.fileio import read_jsonl_log
from transferlab.models.references import load_model
from transferlab.predict.transferability import rankme
from transferlab.train.loop import pretrain


def test_rankme_is_logged_every_n_steps_and_matches_the_checkpoint(tiny_overrides, tmp_path):
    recipe = load_recipe(None, tiny_overrides + ["train.rankme_every=4", "train.rankme_samples=64"])
    pretrain(recipe, tmp_path)
    lines = {line["step"]: line for line in read_jsonl_log(tmp_path / "metrics.jsonl")}
    assert [step for step, line in lines.items() if "rankme" in line] == [4, 8]

    # the same probe images through the checkpoint written at step 8, with the RankMe of predict/
    data = load_splits("mnist5k", recipe.datasets["mnist5k"], recipe.model.image_size, 1)["train"]
    chosen = torch.from_numpy(Permutation.derived(len(data), recipe.seed, "rankme-probe", 0).take(0, 64))
    encoder = load_model(str(tmp_path / "checkpoints" / "step_8"), torch.device("cpu")).encoder
    with torch.no_grad():
        embeddings = encoder.encode_image(encoder.preprocess(data.images[chosen]))
    assert lines[8]["rankme"] == pytest.approx(rankme(embeddings.numpy()), rel=1e-5)
    assert 1 < lines[8]["rankme"] <= 16  # an effective rank of a 16-dimensional embedding


def test_rankme_every_must_be_a_multiple_of_log_every(tiny_overrides):
    with pytest.raises(UserError, match="multiple of log_every"):
        load_recipe(None, tiny_overrides + ["train.rankme_every=3"])
