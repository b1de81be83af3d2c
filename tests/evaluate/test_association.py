"""WinoGAViL's association task: the Jaccard scores by hand and against DataComp's evaluate_winogavil_dataset (its
model, tokenizer and dataset replaced by fixed features), and the dataset read from the `load_dataset` cache
DataComp's download leaves, whose images are paths to files the loading script extracted."""

import json
import shutil

import numpy as np
import pytest
import torch

from tests.evaluate.datacomp_reference import datacomp_module
from tests.layouts import pngs, write_load_dataset_cache
from transferlab.config import suite_from_dict
from transferlab.data.readers.winogavil import Instance
from transferlab.errors import UserError
from transferlab.evaluate.association import association_metrics, cue_prompt, jaccard_scores
from transferlab.evaluate.suite import embedded_dataset, run_suite
from transferlab.models.references import load_model

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


def test_jaccard_by_hand():
    images = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1], [0.5, 0.5], [0.2, 0.8]])
    cues = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    instances = [Instance("sun", 0, (True, False, True)),  # chooses images 0, 1: {0} ∩ / {0, 1, 2} ∪ -> 1/3
                 Instance("moon", 3, (False, True))]  # chooses image 4 (0.8 > 0.5): right -> 1
    assert jaccard_scores(images, cues, instances) == pytest.approx([1 / 3, 1.0])
    metrics = association_metrics(np.array([1 / 3, 1.0, 0.5]), np.array([5, 10, 12]))
    assert metrics["avg_jaccard_score"] == pytest.approx(11 / 18)
    assert metrics["jaccard_score_5-6"] == pytest.approx(1 / 3) and metrics["jaccard_score_10-12"] == 0.75
    assert np.isnan(metrics["jaccard_score_6"])
    assert cue_prompt("Owl") == "An owl" and cue_prompt("moon") == "A moon"


def generated(seed: int, count: int = 60, dim: int = 8):
    """Instances of 5, 6, 10 and 12 candidates with random features: (rows, image features, cue features)."""
    rng = np.random.default_rng(seed)
    rows, images, cues = [], [], []
    for i in range(count):
        size = [5, 6, 10, 12][i % 4]
        names = [f"thing{i}-{j}" for j in range(size)]
        fits = rng.choice(size, rng.integers(1, 4), replace=False)
        rows.append({"cue": ["Apple", "tree", "Ice", "stone"][i % 4] + f" {i}", "candidates": names,
                     "associations": [names[j] for j in fits],
                     "candidate_images": list(range(len(images), len(images) + size))})
        images += list(rng.normal(size=(size, dim)))
        cues.append(rng.normal(size=dim) + 0.8 * np.mean([images[len(images) - size + j] for j in fits], axis=0))
    return rows, torch.tensor(np.array(images), dtype=torch.float32), torch.tensor(np.array(cues), dtype=torch.float32)


@pytest.mark.parametrize("seed", range(3))
def test_equal_to_datacomps_winogavil_evaluation(monkeypatch, seed):
    wino = datacomp_module("wino_eval")
    rows, images, cues = generated(seed)
    prompts = {cue_prompt(row["cue"]): i for i, row in enumerate(rows)}

    class Features:  # DataComp's model: image "pixels" are row numbers into the fixed features
        def encode_image(self, pixels, normalize=True):
            return torch.nn.functional.normalize(images[pixels.long().flatten()], dim=-1)

        def encode_text(self, tokens, normalize=True):
            return torch.nn.functional.normalize(cues[tokens.long().flatten()], dim=-1)

    monkeypatch.setattr(wino, "create_model", lambda *_: (Features(), lambda index: torch.tensor(index), "cpu"))
    monkeypatch.setattr(wino.open_clip, "get_tokenizer",
                        lambda _: lambda texts: torch.tensor([prompts[text] for text in texts]))  # KeyError: a
    monkeypatch.setattr(wino.datasets, "load_dataset", lambda *_, **__: rows)  # prompt other than ours
    theirs = wino.evaluate_winogavil_dataset("arch", "weights", num_workers=0)
    instances, start = [], 0
    for row in rows:
        fits = tuple(name in row["associations"] for name in row["candidates"])
        instances.append(Instance(row["cue"], start, fits))
        start += len(fits)
    ours = association_metrics(jaccard_scores(images, cues, instances), np.array([len(i.fits) for i in instances]))
    assert ours == pytest.approx({k: float(v) for k, v in theirs.items()})


@pytest.fixture
def winogavil(tmp_path, monkeypatch):
    """DataComp's download of nlphuji/winogavil: <root>/hf_cache/nlphuji___winogavil/TEST/1.1.0/<hash>/, with the
    candidate images as files in hf_cache/downloads/extracted/ that the rows name by path."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    import datasets
    from PIL import Image

    cache = tmp_path / "datacomp" / "hf_cache"
    folder = cache / "downloads" / "extracted" / "f00d" / "winogavil_images"
    folder.mkdir(parents=True)
    rows = []
    for i, size in enumerate([5, 6, 10, 12, 5]):
        names = [f"c{i}-{j}" for j in range(size)]
        for j, image in enumerate(pngs(size, 10 * i, 16)):
            Image.fromarray(image).save(folder / f"{names[j]}.png")
        rows.append({"cue": f"cue {i}", "candidates": names, "associations": names[:2],
                     "candidate_images": [str(folder / f"{name}.png") for name in names]})
    features = {"cue": datasets.Value("string"), "candidate_images": [datasets.Image()],
                "candidates": [datasets.Value("string")], "associations": [datasets.Value("string")],
                "num_associations": datasets.Value("int64")}
    write_load_dataset_cache(cache, "nlphuji/winogavil", features, [{**r, "num_associations": 2} for r in rows],
                             config="TEST")
    return cache / "nlphuji___winogavil", rows


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return load_model(f"openclip:{path}", torch.device("cpu")).encoder


def suite(root, tasks=("association",)):
    return suite_from_dict({"name": "wino", "datasets": {"misc/winogavil": {"source": "winogavil", "root": str(root)}},
                            "eval": {"datasets": ["misc/winogavil"], "tasks": list(tasks)}}, "test")


def test_the_association_task_on_datacomps_download(encoder, winogavil, tmp_path):
    root, rows = winogavil
    tasks = run_suite(encoder, suite(root, ["association", "zeroshot_classification"]), tmp_path / "out",
                      None)["results"]["tasks"]
    task = tasks[0]
    assert task["main"] == "jaccard_score_10-12" and "no class labels" in tasks[1]["skipped"]
    embedded = embedded_dataset(encoder, suite(root), "misc/winogavil", None)
    instances = embedded.data.instances
    assert [i.cue for i in instances] == [r["cue"] for r in rows] and len(embedded.data) == 38
    assert instances[3].start == 21 and instances[3].fits == (True, True) + (False,) * 10
    cues = encoder.encode_text([cue_prompt(r["cue"]) for r in rows])
    expected = association_metrics(jaccard_scores(embedded.embed("test"), cues, instances), np.array([5, 6, 10, 12, 5]))
    assert task["metrics"] == pytest.approx(expected)


def test_a_moved_cache_still_finds_its_extracted_images(encoder, winogavil, tmp_path):
    root, _ = winogavil
    moved = tmp_path / "elsewhere"
    shutil.move(root.parents[1], moved)  # the whole data root, hf_cache/ with it: the stored paths are stale
    embedded = embedded_dataset(encoder, suite(moved / "hf_cache" / "nlphuji___winogavil"), "misc/winogavil", None)
    assert len(embedded.data) == 38
    shutil.rmtree(moved / "hf_cache" / "downloads")
    with pytest.raises(UserError, match="candidate image cannot be read: no bytes, and no file at its path"):
        embedded_dataset(encoder, suite(moved / "hf_cache" / "nlphuji___winogavil"), "misc/winogavil", None)
