"""Suites over benchmark datasets: per-dataset tasks, what cannot apply skipped with a reason, results kept as
they come, the dataset's own templates, provenance and fingerprints."""

import json
import shutil

import pytest
import torch

from tests.layouts import pngs, write_clip_benchmark
from transferlab.config import suite_from_dict
from transferlab.data.fingerprint import dataset_fingerprint
from transferlab.errors import UserError
from transferlab.evaluate.suite import run_suite
from transferlab.models.encoder import zeroshot_weights
from transferlab.models.references import load_model

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
NAMES = ["red square", "green circle", "blue star"]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return load_model(f"openclip:{path}:random", torch.device("cpu")).encoder


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    shapes = write_clip_benchmark(folder / "wds_shapes", {
        "train": [(image, i % 3) for i, image in enumerate(pngs(30, 0, 16))],
        "test": [(image, i % 3) for i, image in enumerate(pngs(12, 1, 16))]}, NAMES, ["a photo of a {c}."])
    captions = write_clip_benchmark(folder / "wds_captions", {
        "test": [(image, [f"picture number {i}", f"image {i} again"]) for i, image in enumerate(pngs(10, 2, 16))]},
        retrieval=True)
    return shapes, captions


def _suite(roots, tasks, **extra):
    shapes, captions = roots
    return suite_from_dict({"name": "bench", "datasets": {
        "shapes": {"source": "clip-benchmark", "root": str(shapes)},
        "captions": {"source": "clip-benchmark", "root": str(captions)}},
        "eval": {"datasets": ["shapes", "captions"], "tasks": tasks, "templates": ["suite template {}"],
                 "linear_probe": {"weight_decays": [0.01]}, **extra}}, "test")


def test_labelled_and_caption_datasets_in_one_suite(encoder, roots, tmp_path):
    suite = _suite(roots, ["zeroshot_classification", "linear_probe", "retrieval"])
    section = run_suite(encoder, suite, tmp_path, None)
    results = json.loads((tmp_path / "results.json").read_text())
    by = {(t["dataset"], t["task"]): t for t in results["tasks"]}
    assert set(by["shapes", "zeroshot_classification"]["metrics"]) >= {"acc1", "mean_per_class_recall"}
    assert by["shapes", "zeroshot_classification"]["main"] == "acc1"
    assert by["shapes", "linear_probe"]["metrics"]["acc1"] >= 0
    assert "label-only" in by["shapes", "retrieval"]["skipped"] and by["shapes", "retrieval"]["metrics"] == {}
    assert "no class labels" in by["captions", "zeroshot_classification"]["skipped"]
    assert "no class labels" in by["captions", "linear_probe"]["skipped"]
    retrieval = by["captions", "retrieval"]
    assert retrieval["main"] == "mean_recall@1" and retrieval["metrics"]["mean_recall@1"] == pytest.approx(
        (retrieval["metrics"]["text_retrieval_recall@1"] + retrieval["metrics"]["image_retrieval_recall@1"]) / 2)
    assert section["results"]["tasks"] == results["tasks"]


def test_per_dataset_tasks_and_main_metrics(encoder, roots, tmp_path):
    suite = _suite(roots, ["zeroshot_classification"], dataset_tasks={"captions": ["retrieval"]},
                   main_metrics={"shapes": "mean_per_class_recall"})
    tasks = run_suite(encoder, suite, tmp_path, None)["results"]["tasks"]
    assert [(t["dataset"], t["task"], t.get("main"), "skipped" in t) for t in tasks] == [
        ("shapes", "zeroshot_classification", "mean_per_class_recall", False),
        ("captions", "retrieval", "mean_recall@1", False)]
    with pytest.raises(UserError, match="eval.dataset_tasks names dataset 'nope'"):
        _suite(roots, ["retrieval"], dataset_tasks={"nope": ["retrieval"]})


def test_zero_shot_uses_the_templates_the_dataset_publishes(encoder, roots, tmp_path):
    from transferlab.evaluate.suite import embedded_dataset

    embedded = embedded_dataset(encoder, _suite(roots, ["zeroshot_classification"]), "shapes", None)
    weights = embedded.text_classifier(["suite template {}"], "zeroshot_classification")
    assert torch.allclose(weights, zeroshot_weights(encoder.encode_text, NAMES, ["a photo of a {}."]))
    assert not torch.allclose(weights, zeroshot_weights(encoder.encode_text, NAMES, ["suite template {}"]))


def test_results_so_far_are_kept_when_a_later_dataset_fails(encoder, roots, tmp_path):
    suite = _suite(roots, ["zeroshot_classification"])
    suite.datasets["captions"].root = str(tmp_path / "gone")
    with pytest.raises(UserError, match="does not exist"):
        run_suite(encoder, suite, tmp_path, None)
    results = json.loads((tmp_path / "results.json").read_text())
    assert [(t["dataset"], t["task"]) for t in results["tasks"]] == [("shapes", "zeroshot_classification")]


def test_provenance_names_code_data_and_suite(encoder, roots, tmp_path):
    suite = _suite(roots, ["zeroshot_classification"])
    provenance = run_suite(encoder, suite, tmp_path, None)["results"]["provenance"]
    assert provenance["transferlab"] and provenance["libraries"]["torch"] == torch.__version__
    assert provenance["device"] == "cpu" and provenance["precision"] == "float32"
    assert provenance["datasets"]["shapes"]["samples"] == 42
    assert provenance["datasets"]["shapes"]["splits"] == {"train": 27, "val": 3, "test": 12}
    assert provenance["datasets"]["shapes"]["fingerprint"] == dataset_fingerprint(suite.datasets["shapes"])
    other = _suite(roots, ["zeroshot_classification"], templates=["another {}"])
    assert run_suite(encoder, other, tmp_path, None)["results"]["provenance"]["suite_hash"] != provenance["suite_hash"]


def test_fingerprint_follows_content_not_location(roots, tmp_path):
    shapes, _ = roots
    copy = tmp_path / "elsewhere"
    shutil.copytree(shapes, copy)
    spec = _suite(roots, ["zeroshot_classification"]).datasets["shapes"]
    moved = spec.model_copy(update={"root": str(copy)})
    assert dataset_fingerprint(moved) == dataset_fingerprint(spec)
    with open(copy / "classnames.txt", "a") as file:
        file.write("one more\n")
    assert dataset_fingerprint(moved) != dataset_fingerprint(spec)
