"""Under torchrun each rank's batch is its shard of the single-process batch, random draws included."""

import pytest
import torch

from transferlab.config import load_recipe
from transferlab.data.captions import CaptionTable
from transferlab.data.readers.sources import load_splits
from transferlab.distributed import World
from transferlab.errors import UserError
from transferlab.train.batches import BatchMaker


def makers(overrides: list[str], sizes: list[int], views: int = 1):
    recipe = load_recipe(None, ["train.data=digits", "train.batch_size=12", *overrides])
    data = load_splits("digits", recipe.datasets["digits"], recipe.model.image_size, recipe.model.channels)["train"]
    captions = CaptionTable(data.captions)
    return [[BatchMaker(recipe, len(data), torch.device("cpu"), data.images, data.labels, captions, views,
                        world=World(rank, size)) for rank in range(size)] for size in sizes]


@pytest.mark.parametrize("size", [2, 3, 4])
def test_shards_concatenate_to_the_single_process_batch(size):
    (whole,), ranks = makers(["train.augment.low_res_prob=0.5"], [1, size], views=2)
    for step in (0, 7, 200):  # 200: a later epoch, a new order
        expected, parts = whole(step), [maker(step) for maker in ranks]
        for field in ("index", "labels", "caption_ids", "positive_ids"):
            assert torch.equal(torch.cat([getattr(part, field) for part in parts]), getattr(expected, field)), field
        for view in range(2):
            assert torch.equal(torch.cat([part.views[view] for part in parts]), expected.views[view])
        assert all(torch.equal(part.row_image, torch.arange(12 // size)) for part in parts)


def test_a_global_batch_that_does_not_divide_or_all_captions_under_torchrun_are_refused():
    with pytest.raises(UserError, match="multiple of 5"):
        makers([], [5])
    with pytest.raises(UserError, match="captions 'all'"):
        makers(["train.captions=all"], [2])
