"""CLIP_benchmark's webdataset layout (and the plain webdataset source pointed at it): labels, class order,
captions, templates and pixels read back exactly; nothing about the layout is guessed silently."""

import numpy as np
import pytest
import torch

from tests.layouts import encode, pngs, write_clip_benchmark
from transferlab.config import ClipBenchmarkSource, WebDatasetSource
from transferlab.data.images import decode_image
from transferlab.data.readers.sources import load_dataset, load_splits
from transferlab.errors import UserError

NAMES = ["apple", "banana split", "cherry"]
TEMPLATES = ["a photo of a {c}.", "a blurry photo of the {c}."]


@pytest.fixture
def classification(tmp_path):
    train = [(image, i % 3) for i, image in enumerate(pngs(9, 0))]
    test = [(image, (i * 2) % 3) for i, image in enumerate(pngs(7, 1))]
    root = write_clip_benchmark(tmp_path / "wds_fruit", {"train": train, "test": test}, NAMES, TEMPLATES, max_count=4)
    return root, train, test


def _expected(samples, size=12):
    return torch.stack([decode_image(encode(image), size, 3) for image, _ in samples])


def test_classification_splits_labels_names_templates_and_pixels(classification):
    root, train, test = classification
    assert (root / "train" / "nshards.txt").read_text() == "3\n"  # 9 samples, 4 a shard: the reader follows nshards
    splits = load_splits("fruit", ClipBenchmarkSource(source="clip-benchmark", root=str(root), val_fraction=0.0),
                         12, 3)
    assert torch.equal(splits["test"].labels, torch.tensor([label for _, label in test]))
    assert torch.equal(splits["test"].images, _expected(test))
    assert torch.equal(splits["train"].labels, torch.tensor([label for _, label in train]))
    assert len(splits["val"]) == 0
    data = splits["test"]
    assert data.classnames == NAMES and data.classnames_from == str(root / "classnames.txt")
    assert data.templates == ["a photo of a {}.", "a blurry photo of the {}."]
    assert data.captions == [[]] * len(test)  # label-only samples are kept without captions


def test_val_is_held_out_of_the_published_train_split(classification):
    root, train, _ = classification
    spec = ClipBenchmarkSource(source="clip-benchmark", root=str(root), val_fraction=0.34)
    splits = load_splits("fruit", spec, 12, 3)
    assert len(splits["val"]) == 3 and len(splits["train"]) == 6  # one of each class (stratified)
    assert sorted(splits["val"].labels.tolist()) == [0, 1, 2]
    assert load_dataset("fruit", ClipBenchmarkSource(source="clip-benchmark", root=str(root)), 12, 3).labels.tolist() \
        == [label for _, label in train]  # training on it means its train split, whole


def test_retrieval_captions_one_per_line(tmp_path):
    samples = [(image, [f"caption {i} a", f"caption {i} b with a literal \n inside"])
               for i, image in enumerate(pngs(5, 2))]
    root = write_clip_benchmark(tmp_path / "flickr", {"test": samples}, retrieval=True)
    splits = load_splits("flickr", ClipBenchmarkSource(source="clip-benchmark", root=str(root)), 12, 3)
    data = splits["test"]
    assert data.labels is None and len(splits["train"]) == 0
    # the exporter writes a caption's own line break as the two characters backslash-n, as CLIP_benchmark reads it
    assert data.captions == [[f"caption {i} a", f"caption {i} b with a literal \\n inside"] for i in range(5)]


def test_webdataset_source_on_the_layout_finds_names_and_templates_and_says_so(classification):
    root, _, test = classification
    data = load_dataset("fruit", WebDatasetSource(source="webdataset", shards=str(root / "test"), label_key="cls"),
                        12, 3)
    assert data.classnames == NAMES and data.templates == ["a photo of a {}.", "a blurry photo of the {}."]
    assert any("classnames.txt read from the dataset folder above the shards" in note for note in data.report.notes)
    assert data.labels.tolist() == [label for _, label in test]


def test_integer_labels_without_names_are_reported_and_refused_by_zero_shot(tmp_path):
    from transferlab.evaluate.tasks import EmbeddedDataset

    root = write_clip_benchmark(tmp_path / "nameless", {"test": [(image, i % 2) for i, image in enumerate(pngs(4, 3))]})
    data = load_dataset("nameless", WebDatasetSource(source="webdataset", shards=str(root / "test"), label_key="cls"),
                        12, 3)
    assert data.classnames == ["0", "1"] and data.classnames_from is None
    assert any("named by their integer labels" in note for note in data.report.notes)
    embedded = EmbeddedDataset(name="nameless", split="test", splits={"test": data}, embed=None, embed_captions=None,
                encode_text=lambda texts: torch.ones(len(texts), 4))
    with pytest.raises(UserError, match="integer labels"):
        embedded.text_classifier(["{}"], "zeroshot_classification")


def test_several_lines_in_a_plain_webdataset_caption_are_split_and_reported(tmp_path):
    samples = [(image, ["first caption", "second caption"]) for image in pngs(3, 4)]
    root = write_clip_benchmark(tmp_path / "multi", {"test": samples}, retrieval=True)
    spec = WebDatasetSource(source="webdataset", shards=str(root / "test"))
    data = load_dataset("multi", spec, 12, 3)
    assert data.captions == [["first caption", "second caption"]] * 3
    assert any("3 caption members (.txt) hold several lines" in note for note in data.report.notes)
    whole = load_dataset("multi", spec.model_copy(update={"caption_lines": False}), 12, 3)
    assert whole.captions == [["first caption\nsecond caption"]] * 3 and not whole.report.notes


def test_template_file_without_placeholder_is_refused_naming_it(tmp_path):
    root = write_clip_benchmark(tmp_path / "bad", {"test": [(image, 0) for image in pngs(2, 5)]}, ["only"],
                                ["a photo of a thing."])
    with pytest.raises(UserError, match="zeroshot_classification_templates.txt.*no '{c}'"):
        load_dataset("bad", WebDatasetSource(source="webdataset", shards=str(root / "test"), label_key="cls"), 12, 3)


def test_layout_errors_name_the_file(tmp_path):
    root = write_clip_benchmark(tmp_path / "d", {"test": [(image, 0) for image in pngs(2, 6)]}, ["a"])
    spec = ClipBenchmarkSource(source="clip-benchmark", root=str(root))
    (root / "dataset_type.txt").write_text("multilabel\n")
    with pytest.raises(UserError, match="dataset_type.txt says 'multilabel'"):
        load_splits("d", spec, 12, 3)
    (root / "dataset_type.txt").unlink()
    (root / "test" / "nshards.txt").write_text("two\n")
    with pytest.raises(UserError, match="nshards.txt holds 'two'"):
        load_splits("d", spec, 12, 3)
    (root / "test" / "nshards.txt").write_text("2\n")  # names a shard 1.tar that is not there
    with pytest.raises(UserError, match="do not exist"):
        load_splits("d", spec, 12, 3)
    with pytest.raises(UserError, match="does not exist"):
        load_splits("d", spec.model_copy(update={"root": str(tmp_path / "nowhere")}), 12, 3)


def test_hub_dataset_is_fetched_through_huggingface_hub(classification, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    root, _, test = classification
    asked = []

    def snapshot(repo_id, repo_type):
        asked.append((repo_id, repo_type))
        return str(root)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    spec = ClipBenchmarkSource(source="clip-benchmark", root="hf-hub:clip-benchmark/wds_fruit")
    assert load_splits("fruit", spec, 12, 3)["test"].labels.tolist() == [label for _, label in test]
    assert asked == [("clip-benchmark/wds_fruit", "dataset")]

    def offline(repo_id, repo_type):
        raise LocalEntryNotFoundError("offline")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(UserError, match="hf download --repo-type dataset clip-benchmark/wds_fruit"):
        load_splits("fruit", spec, 12, 3)


def test_streamed_layout_equals_in_memory(classification):
    root, _, test = classification
    spec = ClipBenchmarkSource(source="clip-benchmark", root=str(root), stream=True)
    data = load_splits("fruit", spec, 12, 3)["test"]
    assert data.streamed
    from transferlab.data.stream.loader import decode_all
    assert np.array_equal(decode_all(data.images, 12, 3, strict=True).numpy(), _expected(test).numpy())
