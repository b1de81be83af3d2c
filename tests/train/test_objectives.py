"""train.objective's names come from one table (config/catalog.py): every name builds its objective, the
label-needing ones refuse unlabelled data, and LOOK's memory bank loads from checkpoints of either naming."""

import pytest
import torch

from transferlab.config import TrainSpec
from transferlab.config.catalog import IMAGE_TEXT_OBJECTIVES, LABELLED_OBJECTIVES, OBJECTIVES, TWO_VIEW_OBJECTIVES
from transferlab.errors import UserError
from transferlab.train.objectives import CrossEntropy, ImageText, Look, TwoViews, build_objective

EXPECTED = {"clip": ImageText, "siglip": ImageText, "dcl": ImageText, "supcon": TwoViews, "ntxent": TwoViews,
            "look": Look, "ce": CrossEntropy}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_every_objective_name_builds_its_objective(name):
    objective = build_objective(TrainSpec(objective=name), embed_dim=8, classes=3)
    assert type(objective) is EXPECTED[name]
    assert objective.views == (2 if name in TWO_VIEW_OBJECTIVES else 1)
    if name in IMAGE_TEXT_OBJECTIVES:
        assert objective.kind == name
    if name in TWO_VIEW_OBJECTIVES:
        assert objective.supervised == (name == "supcon")


def test_the_table_and_the_classes_agree():
    assert set(EXPECTED) == set(OBJECTIVES)


@pytest.mark.parametrize("name", LABELLED_OBJECTIVES)
def test_objectives_that_need_labels_refuse_unlabelled_data_naming_the_others(name):
    with pytest.raises(UserError) as err:
        build_objective(TrainSpec(objective=name), embed_dim=8, classes=None)
    assert "clip, siglip, dcl, ntxent" in str(err.value)


def test_look_loads_its_bank_saved_under_the_old_name():
    saved = build_objective(TrainSpec(objective="look"), embed_dim=8, classes=3)
    saved.look.enqueue(torch.nn.functional.normalize(torch.randn(5, 8), dim=-1), torch.tensor([0, 1, 2, 0, 1]),
                       torch.arange(5))
    old = {key.replace("look.", "bank.", 1): value for key, value in saved.state_dict().items()}
    assert all(key.startswith("bank.") for key in old)
    loaded = build_objective(TrainSpec(objective="look"), embed_dim=8, classes=3)
    loaded.load_state_dict(old)
    for key, value in saved.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
