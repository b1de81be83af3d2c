"""`transferlab eval MODEL --suite datacomp --data-root DIR` over a root of benchmark datasets in the formats and
folders their downloads give them (one of each kind: classification in five formats, retrieval and WinoGAViL as
DataComp's `load_dataset` cache, WILDS and fairness with their group metadata): the present ones run with their
main metrics, the absent ones are listed with where they are published; `--data-root hf-hub:OWNER` fetches them
through the hub cache; the leaderboard reads the result."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.layouts import encode, pngs, write_clip_benchmark, write_load_dataset_cache
from transferlab.cli import app
from transferlab.errors import UserError
from transferlab.evaluate.collections import COLLECTIONS, collection_suite, detect_source

DATA = Path(__file__).parent / "data"

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


def _datacomp_cache(root, monkeypatch):
    """DataComp's hf_cache: the Flickr 1k test set and WinoGAViL as load_dataset leaves them (images as paths to
    the files the loading scripts extracted)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    extracted = root / "hf_cache" / "downloads" / "extracted" / "e1"
    extracted.mkdir(parents=True)
    for i, image in enumerate(pngs(14, 4, 16)):
        Image.fromarray(image).save(extracted / f"{i}.png")
    write_load_dataset_cache(root / "hf_cache", "nlphuji/flickr_1k_test_image_text_retrieval",
                             {"image": datasets.Image(), "caption": [datasets.Value("string")]},
                             [{"image": str(extracted / f"{i}.png"), "caption": [f"photo {i}", f"image {i}"]}
                              for i in range(4)])
    write_load_dataset_cache(root / "hf_cache", "nlphuji/winogavil",
                             {"cue": datasets.Value("string"), "candidate_images": [datasets.Image()],
                              "candidates": [datasets.Value("string")], "associations": [datasets.Value("string")]},
                             [{"cue": "ten", "candidates": [f"c{j}" for j in range(10)], "associations": ["c1", "c4"],
                               "candidate_images": [str(extracted / f"{j}.png") for j in range(10)]},
                              {"cue": "five", "candidates": [f"d{j}" for j in range(5)], "associations": ["d0"],
                               "candidate_images": [str(extracted / f"{j}.png") for j in range(9, 14)]}], config="TEST")


def _grouped(root, seed, fields):
    """A WILDS- or fairness-style download: CLIP_benchmark's layout, a .npy row of group metadata per sample."""
    labelled = [(image, i % 3) for i, image in enumerate(pngs(9, seed, 16))]
    rows = np.array([[i % 3, i % 2, i % 3][:fields] for i in range(9)])
    write_clip_benchmark(root, {"test": labelled}, NAMES, ["a photo of a {c}."], metadata={"test": rows})


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "benchmarks"
    labelled = [(image, i % 3) for i, image in enumerate(pngs(6, 1, 16))]
    write_clip_benchmark(root / "wds_vtab-cifar100", {"test": labelled}, NAMES, ["a photo of a {c}."])
    _cifar10(root / "cifar-10-batches-bin")
    _imagefolder(root / "imagenet1k")
    _hf(root / "fgvc_aircraft", monkeypatch, parquet=False)
    _hf(root / "gtsrb", monkeypatch, parquet=True)
    _datacomp_cache(root, monkeypatch)
    _grouped(root / "wds_wilds-fmow_test", 5, 3)  # region, year, y
    _grouped(root / "wds_geode_test", 6, 2)  # region, country
    (root / "unrelated").mkdir()
    return root


FOUND = {"vtab/cifar100": "clip-benchmark", "retrieval/flickr_1k_test_image_text_retrieval": "hf-datasets",
         "cifar10": "cifar", "imagenet1k": "imagefolder", "fgvc_aircraft": "hf-datasets", "gtsrb": "hf-datasets",
         "misc/winogavil": "winogavil", "wilds/fmow": "clip-benchmark", "fairness/geode": "clip-benchmark"}
MAINS = {"retrieval/flickr_1k_test_image_text_retrieval": "mean_recall@1", "misc/winogavil": "jaccard_score_10-12",
         "wilds/fmow": "acc_worst_region", "fairness/geode": "acc_wg", "fgvc_aircraft": "mean_per_class_recall"}


def test_collection_suite_finds_each_format(data_root):
    suite = collection_suite("datacomp", data_root)
    assert {name: spec.source for name, spec in suite.datasets.items()} == FOUND
    assert suite.eval.tasks_for("imagenet1k") == ["zeroshot_classification"]
    assert suite.eval.tasks_for("retrieval/flickr_1k_test_image_text_retrieval") == ["retrieval"]
    assert suite.eval.tasks_for("misc/winogavil") == ["association"]
    assert suite.eval.main_metrics["cifar10"] == "acc1"
    assert suite.eval.main_metrics["fgvc_aircraft"] == "mean_per_class_recall"
    assert suite.eval.group_metrics == {"wilds/fmow": "fmow", "fairness/geode": "geode"}
    assert suite.collection.size == 38 and len(suite.collection.missing) == 38 - len(FOUND)
    iwildcam = suite.collection.missing["wilds/iwildcam"]
    assert f"hf download --repo-type dataset djghosh/wds_wilds-iwildcam_test --local-dir {data_root}/" in iwildcam
    assert "clip-benchmark/wds_imagenet-a" in suite.collection.missing["imagenet-a"]
    with_probe = collection_suite("datacomp", data_root, ["eval.tasks=[zeroshot_classification,linear_probe]"])
    assert with_probe.eval.tasks_for("cifar10") == ["zeroshot_classification", "linear_probe"]
    assert with_probe.eval.tasks_for("retrieval/flickr_1k_test_image_text_retrieval") == ["retrieval"]


def published_lists() -> tuple[set[str], set[str]]:
    """CLIP_benchmark's webdataset names and DataComp's task keys, as copied into tests/evaluate/data/."""
    def read(name):
        return {line.strip() for line in (DATA / name).read_text().splitlines() if line.strip()
                and not line.startswith("#")}
    return {name.removeprefix("wds/") for name in read("clip_benchmark_webdatasets.txt")}, \
        read("datacomp_tasklist.txt")


def test_every_dataset_names_where_its_publishers_list_it():
    """Each repository a message names is one the publishers' own lists give: CLIP_benchmark's webdatasets.txt
    (clip-benchmark/wds_<name, / as ->), DataComp's tasklist.yml by its download script's rule."""
    webdatasets, tasklist = published_lists()
    cb_repos = {f"clip-benchmark/wds_{name.replace('/', '-')}" for name in webdatasets}
    dc_repos = {f"nlphuji/{key.split('/', 1)[1]}" if key.startswith(("retrieval/", "misc/")) else
                f"djghosh/wds_{key.removeprefix('fairness/').replace('/', '-')}_test" for key in tasklist}
    assert {e.key for e in COLLECTIONS["datacomp"]} == tasklist - {"fairness/fairface", "fairness/utkface"}
    for name, entries in COLLECTIONS.items():
        for entry in entries:
            assert entry.repos(), entry.key
            for owner, repo in entry.repos().items():
                assert repo in (dc_repos if owner in ("djghosh", "nlphuji") else cb_repos), (name, entry.key, repo)
                assert repo in entry.how_to_get("ROOT")
    named = [e.clip_benchmark for entries in COLLECTIONS.values() for e in entries if e.clip_benchmark]
    assert len(set(named)) == 41 - len(webdatasets - set(named))  # what is left out of the lists is not named
    assert webdatasets - set(named) == {"fer2013", "voc2007_multilabel", "vtab/dsprites_label_y_position"}


def test_a_collection_fetched_from_the_hub_runs_what_is_cached(data_root, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    cached = {"djghosh/wds_wilds-fmow_test": data_root / "wds_wilds-fmow_test",
              "djghosh/wds_vtab-cifar100_test": data_root / "wds_vtab-cifar100"}
    asked = []

    def snapshot_download(repo_id, repo_type):
        asked.append(repo_id)
        if repo_id not in cached:
            raise LocalEntryNotFoundError("offline")
        return str(cached[repo_id])
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    suite = collection_suite("datacomp", "hf-hub:djghosh")
    assert {k: spec.root for k, spec in suite.datasets.items()} == {
        "vtab/cifar100": "hf-hub:djghosh/wds_vtab-cifar100_test", "wilds/fmow": "hf-hub:djghosh/wds_wilds-fmow_test"}
    assert len(asked) == 35  # every dataset djghosh publishes: not the retrieval sets nor WinoGAViL
    missing = suite.collection.missing
    assert "not in the Hugging Face cache" in missing["imagenet1k"]
    assert "hf download --repo-type dataset djghosh/wds_imagenet1k_test" in missing["imagenet1k"]
    assert missing["misc/winogavil"].startswith("not published by djghosh; DataComp's download_evalsets.py")
    cached.clear()
    with pytest.raises(UserError, match="None of the 19 datasets of collection 'vtab' is at hf-hub:clip-benchmark. "
                                        "For example vtab/caltech101: Dataset repository clip-benchmark/wds_vtab"):
        collection_suite("vtab", "hf-hub:clip-benchmark")
    with pytest.raises(UserError, match="hub owners whose datasets a collection fetches are clip-benchmark"):
        collection_suite("vtab", "hf-hub:someone")


@pytest.mark.slow
def test_eval_datacomp_runs_each_kind_and_averages_what_ran(model, data_root, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["eval", model, "--suite", "datacomp", "--data-root", str(data_root),
                                      "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())
    ran = {task["dataset"]: task for task in results["tasks"]}
    assert set(ran) == set(FOUND) and not any("skipped" in task for task in results["tasks"])
    for dataset, main in MAINS.items():  # each kind's main metric, computed
        assert ran[dataset]["main"] == main and 0 <= ran[dataset]["metrics"][main] <= 1, dataset
    fmow = ran["wilds/fmow"]["metrics"]
    assert fmow["acc_worst_region"] == min(fmow[f"acc_region:{g}"] for g in range(3))
    mains = [task["metrics"][task["main"]] for task in results["tasks"]]
    collection = results["collection"]
    assert collection["ran"] == len(FOUND) and collection["size"] == 38
    assert collection["average"] == pytest.approx(sum(mains) / len(mains))
    assert set(results["provenance"]["datasets"]) == set(FOUND)
    assert f"datacomp average over {len(FOUND)} of 38 datasets" in result.output
    assert "not run: imagenet-a" in result.output
    board = CliRunner().invoke(app, ["leaderboard", str(out), "--out", str(tmp_path / "board")])
    assert board.exit_code == 0, board.output
    assert f"{len(FOUND)} of 38 datasets" in (tmp_path / "board" / "leaderboard.html").read_text()
    assert "⚠1" in board.output and "⚠2" not in board.output and "random weights" in board.output  # its one flag


def test_a_root_without_any_dataset_and_a_missing_root(tmp_path):
    with pytest.raises(UserError, match="None of the 19 datasets of collection 'vtab' is at .*For example "
                                        "vtab/caltech101: not found.*clip-benchmark/wds_vtab-caltech101"):
        collection_suite("vtab", tmp_path)
    with pytest.raises(UserError, match="--data-root"):
        collection_suite("vtab", None)
    assert len(COLLECTIONS["datacomp"]) == 38


def test_detect_source_by_content(data_root):
    assert detect_source(data_root / "wds_vtab-cifar100", "classification")["source"] == "clip-benchmark"
    flickr = data_root / "hf_cache" / "nlphuji___flickr_1k_test_image_text_retrieval"
    assert detect_source(flickr, "retrieval") == {"source": "hf-datasets", "label_column": None,
                                                  "caption_column": "caption", "root": str(flickr)}
    assert detect_source(data_root / "gtsrb", "classification")["source"] == "hf-datasets"
    assert detect_source(data_root / "imagenet1k", "classification")["source"] == "imagefolder"
