"""DataComp's WILDS and fairness datasets as its downloads lay them out (CLIP_benchmark's layout, a .npy row of
group metadata per sample): the rows are read in the samples' order and the zero-shot task adds the dataset's
worst-group metrics, computed on the same scores as its accuracy."""

import json
from typing import get_args

import numpy as np
import pytest
import torch

from tests.layouts import pngs, write_clip_benchmark
from transferlab.config import suite_from_dict
from transferlab.config.schema import GroupProtocol
from transferlab.data.readers.sample_metadata import read_sample_metadata
from transferlab.data.readers.sources import load_splits
from transferlab.errors import UserError
from transferlab.evaluate.group_metrics import PROTOCOLS, group_metrics
from transferlab.evaluate.suite import embedded_dataset, run_suite
from transferlab.models.references import load_model

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
NAMES = ["airport", "barn", "dam", "farm"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return load_model(f"openclip:{path}", torch.device("cpu")).encoder


def fmow(root, count=24, rows=None):
    labels = [i % 4 for i in range(count)]
    rows = np.array([[i % 3 if i % 3 != 2 else 5, 14 + i % 2, labels[i]] for i in range(count)]) if rows is None \
        else rows
    return write_clip_benchmark(root, {"test": list(zip(pngs(count, 3, 16), labels, strict=True))}, NAMES,
                                ["a satellite photo of a {c}."], max_count=10, metadata={"test": rows}), rows


def suite(root, protocol="fmow"):
    return suite_from_dict({"name": "wilds", "datasets": {"fmow": {"source": "clip-benchmark", "root": str(root)}},
                            "eval": {"datasets": ["fmow"], "tasks": ["zeroshot_classification"],
                                     "group_metrics": {"fmow": protocol},
                                     "main_metrics": {"fmow": "acc_worst_region"}}}, "test")


def test_the_protocols_the_config_names_are_the_ones_computed():
    assert set(get_args(GroupProtocol)) == set(PROTOCOLS)


def test_rows_are_read_in_sample_order_across_shards(tmp_path):
    root, rows = fmow(tmp_path / "wds_wilds-fmow_test")
    assert (root / "test" / "nshards.txt").read_text().strip() == "3"
    spec = suite(root).datasets["fmow"]
    data = load_splits("fmow", spec, 16, 3)["test"]
    assert np.array_equal(read_sample_metadata(spec, "test", data), rows)
    plain = write_clip_benchmark(tmp_path / "plain", {"test": [(pngs(1, 0, 16)[0], 0)]}, NAMES)
    spec = suite(plain).datasets["fmow"]
    assert read_sample_metadata(spec, "test", load_splits("fmow", spec, 16, 3)["test"]) is None


def test_zero_shot_adds_the_worst_region_computed_on_its_own_scores(encoder, tmp_path):
    root, rows = fmow(tmp_path / "wds_wilds-fmow_test")
    task, = run_suite(encoder, suite(root), tmp_path / "out", None)["results"]["tasks"]
    assert task["main"] == "acc_worst_region"
    embedded = embedded_dataset(encoder, suite(root), "fmow", None)
    weights = embedded.text_classifier([], "zeroshot_classification")
    scores = (embedded.embed("test") @ weights.T).numpy()
    labels = embedded.data.labels.numpy()
    expected = group_metrics("fmow", scores, labels, rows)
    assert {k: task["metrics"][k] for k in expected} == pytest.approx(expected)
    assert task["metrics"]["acc_avg"] == pytest.approx(task["metrics"]["acc1"])
    assert {k for k in task["metrics"] if k.startswith("acc_region:")} == {"acc_region:0", "acc_region:1",
                                                                          "acc_region:5"}


def test_metadata_that_cannot_be_matched_is_refused(encoder, tmp_path):
    bad_rows = np.zeros((24, 3))  # floats
    root, _ = fmow(tmp_path / "floats", rows=bad_rows)
    with pytest.raises(UserError, match="not a row of integers"):
        run_suite(encoder, suite(root), tmp_path / "out", None)
    plain = write_clip_benchmark(tmp_path / "plain", {"test": [(pngs(1, 0, 16)[0], 0)]}, NAMES)
    with pytest.raises(UserError, match="dataset 'fmow' has no group metadata.*region, year, y"):
        run_suite(encoder, suite(plain), tmp_path / "out2", None)
    root, _ = fmow(tmp_path / "geode")  # rows of 3 where GeoDE's evaluator reads 2
    with pytest.raises(UserError, match=r"int64 \(24, 3\).*region, country"):
        run_suite(encoder, suite(root, "geode"), tmp_path / "out3", None)
