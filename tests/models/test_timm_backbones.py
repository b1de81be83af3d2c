"""`timm:` image backbones: pooled pre-logits features equal timm's own, timm's evaluation transform pixel for
pixel, pretrained tags through timm's download code (its hub call replaced), and the bad references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from transferlab.errors import UserError
from transferlab.evaluate.model_card import source_facts
from transferlab.models.references import load_model

timm = pytest.importorskip("timm")
from timm.data import create_transform, resolve_data_config  # noqa: E402

CPU = torch.device("cpu")


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (19, 45, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (31, 29), dtype=np.uint8), mode="L")]


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """timm's own resnet10t with a classifier, random weights saved as a file (head included, as checkpoints are)."""
    torch.manual_seed(3)
    model = timm.create_model("resnet10t", pretrained=False).eval()
    path = tmp_path_factory.mktemp("timm") / "resnet10t.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def assert_same_as_timm(encoder, model):
    transform = create_transform(**resolve_data_config({}, model=model))
    ours = torch.stack([encoder.preprocess(encoder.decode(image)[None])[0] for image in images()])
    theirs = torch.stack([transform(image.convert("RGB")) for image in images()])
    assert torch.equal(ours, theirs)  # crop_pct 0.875: resize to 201, crop 176, bicubic
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(theirs), pre_logits=True)
        assert (encoder.encode_image(ours) - F.normalize(pooled, dim=-1)).abs().max() < 1e-5


def test_a_weights_file_gives_timms_pooled_features(resnet):
    model, path = resnet
    encoder = load_model(f"timm:resnet10t:{path}", CPU).encoder
    assert encoder.encode_text is None and encoder.image_size == 176
    assert_same_as_timm(encoder, model)


def test_a_pretrained_tag_through_timms_download(resnet, monkeypatch):
    from timm.models import _hub

    model, path = resnet
    calls = []
    monkeypatch.setattr(_hub, "hf_hub_download", lambda repo_id, filename, **kw: calls.append(repo_id) or str(path))
    encoder = load_model("timm:resnet10t:c3_in1k", CPU).encoder
    assert calls == ["timm/resnet10t.c3_in1k"]
    assert encoder.source["license"] == "apache-2.0" and encoder.source["pretrained"] == "c3_in1k"
    assert encoder.weights == {"origin": "pretrained", "library": "timm", "tag": "c3_in1k",
                               "source": "timm/resnet10t.c3_in1k"}
    facts = source_facts(encoder.source)
    assert facts["license"] == "apache-2.0" and facts["pretrained"] == "c3_in1k"
    assert facts["preprocessing"].endswith("mean [0.485, 0.456, 0.406]; std [0.229, 0.224, 0.225]")
    assert_same_as_timm(encoder, model)


def test_offline_without_cached_weights_says_where_and_how(monkeypatch):
    from huggingface_hub import constants
    from huggingface_hub.errors import LocalEntryNotFoundError
    from timm.models import _hub

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(_hub, "hf_hub_download", offline)
    with pytest.raises(UserError) as caught:
        load_model("timm:resnet10t:c3_in1k", CPU)
    assert constants.HF_HUB_CACHE in str(caught.value)
    assert "timm.create_model('resnet10t.c3_in1k', pretrained=True)" in str(caught.value)


def test_a_random_init_is_seeded():
    one, two = (load_model("timm:resnet10t:random", CPU).encoder for _ in range(2))
    assert one.fingerprint == two.fingerprint


@pytest.mark.parametrize(("ref", "message"), [
    ("timm:resnet10q", "timm has no model 'resnet10q'.*Did you mean"),
    ("timm:resnet10t:c3_in1kk", "neither a weights file.*c3_in1k"),
    ("timm:resnet10t:/no/such/file.safetensors", "does not exist"),
])
def test_references_that_do_not_resolve(ref, message):
    with pytest.raises(UserError, match=message):
        load_model(ref, CPU)


def test_a_checkpoint_of_another_architecture(resnet):
    _, path = resnet
    with pytest.raises(UserError, match="does not fit timm model 'resnet14t'"):
        load_model(f"timm:resnet14t:{path}", CPU)


def test_a_suite_gives_the_model_the_pixels_of_timms_own_transform(resnet, tmp_path):
    """Suite datasets from image files are decoded by the model's own resize and crop (crop_pct 0.875 here), so
    the suite's embeddings equal timm's transform + forward on the files."""
    from transferlab.config import Suite
    from transferlab.evaluate.suite import embedded_dataset

    model, path = resnet
    rows = ["image,caption,label"]
    for i, image in enumerate(images() * 4):
        image.save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,an image,{i % 2}")
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    suite = Suite(datasets={"files": {"source": "table", "table": tmp_path / "t.csv", "label_column": "label",
                                      "splits": {"train": 0.5, "val": 0.0, "test": 0.5}}},
                  eval={"datasets": ["files"], "tasks": ["linear_probe"]})
    encoder = load_model(f"timm:resnet10t:{path}", CPU).encoder
    dataset = embedded_dataset(encoder, suite, "files", None)
    embedded = dataset.embed("test")
    transform = create_transform(**resolve_data_config({}, model=model))
    files = [dataset.splits["test"].images.sources[s] for s in dataset.splits["test"].images.source]
    with torch.no_grad():
        theirs = torch.stack([transform(Image.open(f).convert("RGB")) for f in files])
        pooled = F.normalize(model.forward_head(model.forward_features(theirs), pre_logits=True), dim=-1)
    assert (embedded - pooled).abs().max() < 1e-5
