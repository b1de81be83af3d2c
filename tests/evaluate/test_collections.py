"""`transferlab eval MODEL --suite datacomp --data-root DIR` over a root of benchmark datasets in five formats:
the present ones run, the absent ones are listed, one average over what ran; the leaderboard reads it."""

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.layouts import encode, pngs, write_clip_benchmark
from transferlab.cli import app
from transferlab.errors import UserError
from transferlab.evaluate.collections import COLLECTIONS, collection_suite, detect_source

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
NAMES = ["cat", "dog", "fish"]


def _cifar10(folder):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for file, count in [*((f"data_batch_{i}.bin", 3) for i in range(1, 6)), ("test_batch.bin", 6)]:
        (folder / file).write_bytes(b"".join(bytes([i % 10]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes()
                                             for i in range(count)))
    (folder / "batches.meta.txt").write_text("\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                        "horse", "ship", "truck"]) + "\n")


def _imagefolder(root):
    for split, count in [("train", 3), ("val", 2)]:
        for c, name in enumerate(NAMES):
            (root / split / name).mkdir(parents=True)
            for i, image in enumerate(pngs(count, 10 * c + count, 16)):
                Image.fromarray(image).save(root / split / name / f"{i}.png")


def _hf(root, monkeypatch, parquet: bool):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(root.parent / "hf-cache"))
    import datasets

    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=NAMES)})
    test = datasets.Dataset.from_dict({"image": [{"bytes": encode(image), "path": None} for image in pngs(6, 7, 16)],
                                       "label": [i % 3 for i in range(6)]}, features=features)
    if parquet:
        root.mkdir(parents=True)
        test.to_parquet(str(root / "test-00000-of-00001.parquet"))
    else:
        datasets.DatasetDict({"test": test}).save_to_disk(str(root))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return f"openclip:{path}:random"


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "benchmarks"
    labelled = [(image, i % 3) for i, image in enumerate(pngs(6, 1, 16))]
    write_clip_benchmark(root / "wds_vtab-cifar100", {"test": labelled}, NAMES, ["a photo of a {c}."])
    write_clip_benchmark(root / "wds_flickr30k", {"test": [(image, [f"photo {i}", f"image {i}"])
                                                            for i, image in enumerate(pngs(5, 2, 16))]}, retrieval=True)
    _cifar10(root / "cifar-10-batches-bin")
    _imagefolder(root / "imagenet1k")
    _hf(root / "fgvc_aircraft", monkeypatch, parquet=False)
    _hf(root / "gtsrb", monkeypatch, parquet=True)
    (root / "unrelated").mkdir()
    return root


FOUND = {"vtab/cifar100": "clip-benchmark", "retrieval/flickr_1k_test_image_text_retrieval": "clip-benchmark",
         "cifar10": "cifar", "imagenet1k": "imagefolder", "fgvc_aircraft": "hf-datasets", "gtsrb": "hf-datasets"}


def test_collection_suite_finds_each_format(data_root):
    suite = collection_suite("datacomp", data_root)
    assert {name: spec.source for name, spec in suite.datasets.items()} == FOUND
    assert suite.eval.tasks_for("imagenet1k") == ["zeroshot_classification"]
    assert suite.eval.tasks_for("retrieval/flickr_1k_test_image_text_retrieval") == ["retrieval"]
    assert suite.eval.main_metrics["cifar10"] == "acc1"
    assert suite.eval.main_metrics["fgvc_aircraft"] == "mean_per_class_recall"
    assert suite.collection.size == 38 and len(suite.collection.missing) == 38 - len(FOUND)
    assert "not run" in suite.collection.missing["misc/winogavil"]
    assert "huggingface-cli download" in suite.collection.missing["imagenet-a"]
    with_probe = collection_suite("datacomp", data_root, ["eval.tasks=[zeroshot_classification,linear_probe]"])
    assert with_probe.eval.tasks_for("cifar10") == ["zeroshot_classification", "linear_probe"]
    assert with_probe.eval.tasks_for("retrieval/flickr_1k_test_image_text_retrieval") == ["retrieval"]


def test_eval_datacomp_runs_what_is_present_and_averages_it(model, data_root, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", model, "--suite", "datacomp", "--data-root", str(data_root),
                                      "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    ran = {task["dataset"]: task for task in results["tasks"]}
    assert set(ran) == set(FOUND) and not any("skipped" in task for task in results["tasks"])
    mains = [task["metrics"][task["main"]] for task in results["tasks"]]
    collection = results["collection"]
    assert collection["ran"] == 6 and collection["size"] == 38
    assert collection["average"] == pytest.approx(sum(mains) / len(mains))
    assert ran["retrieval/flickr_1k_test_image_text_retrieval"]["main"] == "mean_recall@1"
    assert ran["fgvc_aircraft"]["main"] == "mean_per_class_recall"
    assert set(results["provenance"]["datasets"]) == set(FOUND)
    assert "datacomp average over 6 of 38 datasets" in result.output
    assert "not run: imagenet-a" in result.output
    board = CliRunner().invoke(app, ["leaderboard", str(out), "--out", str(tmp_path / "board")])
    assert board.exit_code == 0, board.output
    assert "⚠1" in board.output and "⚠2" not in board.output and "random weights" in board.output  # its one flag
    assert (tmp_path / "board" / "leaderboard.html").is_file()


def test_a_root_without_any_dataset_and_a_missing_root(tmp_path):
    with pytest.raises(UserError, match="None of the 19 datasets of collection 'vtab'"):
        collection_suite("vtab", tmp_path)
    with pytest.raises(UserError, match="--data-root"):
        collection_suite("vtab", None)
    assert len(COLLECTIONS["datacomp"]) == 38


def test_detect_source_by_content(data_root):
    assert detect_source(data_root / "wds_flickr30k", "retrieval")["source"] == "clip-benchmark"
    assert detect_source(data_root / "gtsrb", "classification")["source"] == "hf-datasets"
    assert detect_source(data_root / "imagenet1k", "classification")["source"] == "imagefolder"
