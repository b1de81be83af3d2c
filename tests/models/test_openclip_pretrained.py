"""`openclip:<arch>:<pretrained tag>` and `openclip:hf-hub:<repo>` through open_clip's own registry and
download code, with only the hub client's network call replaced: by a local file (same embeddings and the
same pixels as open_clip's own model and transform) or by a failure (one actionable message)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from transferlab.errors import UserError
from transferlab.models.references import load_model

open_clip = pytest.importorskip("open_clip")
from open_clip import pretrained as registry  # noqa: E402
from open_clip.transform import PreprocessCfg, image_transform_v2  # noqa: E402

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
REPO = "transferlab-test/tiny-clip"
CPU = torch.device("cpu")


def images() -> list[Image.Image]:
    """Odd-sized, non-square, tall and wide, RGB and grey: where resize modes and interpolations differ."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (37, 23, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (19, 45, 3), dtype=np.uint8)),
            Image.fromarray(rng.integers(0, 256, (31, 29), dtype=np.uint8), mode="L")]


@pytest.fixture
def tiny(tmp_path):
    """A registered tiny config and open_clip's own random model of it, its weights saved as safetensors."""
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(path))
    torch.manual_seed(5)
    model = open_clip.create_model("tiny-clip", pretrained=None).eval()
    weights = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return model, weights


def hub(monkeypatch, files: dict[str, object]):
    """Replace the hub client's download, as open_clip imports it: a file name -> a local path, or an error."""
    calls = []

    def download(repo_id, filename, revision=None, cache_dir=None):
        calls.append((repo_id, filename))
        answer = files.get(filename, files.get("*"))
        if isinstance(answer, Exception):
            raise answer
        if answer is None or repo_id != REPO:
            raise FileNotFoundError(f"{repo_id}/{filename}")
        return str(answer)

    monkeypatch.setattr(registry, "hf_hub_download", download)
    return calls


def assert_same_as_open_clip(encoder, model, cfg: dict):
    """decode + preprocess give open_clip's transform's tensors; embeddings equal open_clip's model's."""
    transform = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    ours = torch.stack([encoder.preprocess(encoder.decode(image)[None])[0] for image in images()])
    theirs = torch.stack([transform(image) for image in images()])
    assert torch.equal(ours, theirs)
    captions = ["a photo of a cat.", "two dogs", "a handwritten digit seven."]
    with torch.no_grad():
        assert (encoder.encode_image(ours) - F.normalize(model.encode_image(theirs), dim=-1)).abs().max() < 1e-6
        tokens = open_clip.get_tokenizer("tiny-clip")(captions)
        assert (encoder.encode_text(captions) - F.normalize(model.encode_text(tokens), dim=-1)).abs().max() < 1e-6


def test_a_pretrained_tag_loads_with_its_published_preprocessing(tiny, monkeypatch):
    model, weights = tiny
    tag = registry._pcfg(hf_hub=f"{REPO}/", mean=MEAN, std=STD, interpolation="bilinear", resize_mode="squash")
    monkeypatch.setitem(registry._PRETRAINED, "tiny-clip", {"tiny_tag": tag})
    calls = hub(monkeypatch, {"*": weights})
    encoder = load_model("openclip:tiny-clip:tiny-tag", CPU).encoder  # open_clip normalises tags: - becomes _
    assert encoder.name == "openclip:tiny-clip:tiny_tag"
    assert calls and all(repo == REPO for repo, _ in calls)
    assert encoder.source["pretrained"] == "tiny_tag" and encoder.source["preprocessing"]["resize_mode"] == "squash"
    assert_same_as_open_clip(encoder, model, {"size": 16, "mean": MEAN, "std": STD, "interpolation": "bilinear",
                                              "resize_mode": "squash"})


def test_a_tag_trained_with_quickgelu_gets_quickgelu(tiny, monkeypatch):
    from open_clip.transformer import QuickGELU

    _, weights = tiny
    monkeypatch.setitem(registry._PRETRAINED, "tiny-clip", {"openai_like": registry._pcfg(hf_hub=f"{REPO}/",
                                                                                          quick_gelu=True)})
    hub(monkeypatch, {"*": weights})
    encoder = load_model("openclip:tiny-clip:openai_like", CPU).encoder
    assert any(isinstance(module, QuickGELU) for module in encoder.module.modules())


def test_an_hf_hub_repository_loads_its_config_weights_and_preprocessing(tiny, tmp_path, monkeypatch):
    model, weights = tiny
    preprocess = {"mean": MEAN, "std": STD, "interpolation": "bicubic", "resize_mode": "longest"}
    config = tmp_path / "open_clip_config.json"
    config.write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": preprocess}))
    hub(monkeypatch, {"open_clip_config.json": config, "*": weights})
    encoder = load_model(f"openclip:hf-hub:{REPO}", CPU).encoder
    assert encoder.name == f"openclip:hf-hub:{REPO}" and encoder.image_size == 16
    assert_same_as_open_clip(encoder, model, {"size": 16, **preprocess})


def test_a_local_directory_in_the_hub_layout(tiny, tmp_path):
    model, weights = tiny
    preprocess = {"mean": MEAN, "std": STD, "interpolation": "bilinear", "resize_mode": "shortest"}
    directory = tmp_path / "exported"
    directory.mkdir()
    (directory / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP, "preprocess_cfg": preprocess}))
    (directory / "open_clip_model.safetensors").write_bytes(weights.read_bytes())
    encoder = load_model(f"openclip:local-dir:{directory}", CPU).encoder
    assert_same_as_open_clip(encoder, model, {"size": 16, **preprocess})
    with pytest.raises(UserError, match="has no open_clip_config.json"):
        load_model(f"openclip:local-dir:{tmp_path}", CPU)


def test_a_checkpoint_file_keeps_working_with_the_configs_preprocessing(tiny):
    model, weights = tiny
    encoder = load_model(f"openclip:tiny-clip:{weights}", CPU).encoder
    assert_same_as_open_clip(encoder, model, {"size": 16, "mean": registry.OPENAI_DATASET_MEAN,
                                              "std": registry.OPENAI_DATASET_STD})


def test_offline_without_cached_weights_says_where_and_how(tiny, monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    offline = LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing traffic "
                                      "has been disabled.")
    hub(monkeypatch, {"*": offline})
    from huggingface_hub import constants

    with pytest.raises(UserError) as caught:
        load_model("openclip:ViT-B-32:laion2b_s34b_b79k", CPU)
    message = str(caught.value)
    assert constants.HF_HUB_CACHE in message and "Traceback" not in message
    assert ("python -c \"import open_clip; open_clip.create_model_and_transforms('ViT-B-32', "
            "pretrained='laion2b_s34b_b79k')\"") in message
    with pytest.raises(UserError, match=f"not in the cache .*`hf download {REPO}`"):
        load_model(f"openclip:hf-hub:{REPO}", CPU)


@pytest.mark.parametrize(("ref", "message"), [
    ("openclip:ViT-B-32:laion2b_nope", "neither a weights file.*laion2b_s34b_b79k.*Did you mean"),
    ("openclip:ViT-B-32:/no/such/weights.safetensors", "does not exist"),
    ("openclip:hf-hub:", "needs a repository"),
])
def test_references_that_name_no_weights(ref, message):
    with pytest.raises(UserError, match=message):
        load_model(ref, CPU)


def test_a_config_without_pretrained_weights_says_so(tiny):
    with pytest.raises(UserError, match="publishes no pretrained weights"):
        load_model("openclip:tiny-clip:some_tag", CPU)


def test_same_weights_with_other_preprocessing_never_share_cached_features(tiny, tmp_path, monkeypatch):
    from transferlab.data.dataset import ImageTextData
    from transferlab.evaluate.features import image_embeddings

    model, weights = tiny
    monkeypatch.setitem(registry._PRETRAINED, "tiny-clip", {"tiny_tag": registry._pcfg(hf_hub=f"{REPO}/",
                                                                                       resize_mode="squash")})
    hub(monkeypatch, {"*": weights})
    squash = load_model("openclip:tiny-clip:tiny_tag", CPU).encoder
    shortest = load_model(f"openclip:tiny-clip:{weights}", CPU).encoder
    assert all(torch.equal(v, shortest.module.state_dict()[k]) for k, v in squash.module.state_dict().items())
    data = ImageTextData("toy", torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8), [["a"], ["b"]])
    for encoder in (squash, shortest, squash):
        image_embeddings(encoder, data, "test", tmp_path / "features")
    assert len(list((tmp_path / "features").iterdir())) == 2


def test_a_checkpoint_of_another_shape(tiny, tmp_path):
    _, weights = tiny
    wide = tmp_path / "wide-clip.json"
    wide.write_text(json.dumps({**TINY_CLIP, "embed_dim": 32}))
    with pytest.raises(UserError, match="does not fit open_clip config 'wide-clip'.*another shape"):
        load_model(f"openclip:{wide}:{weights}", CPU)


def test_a_tokenizer_that_cannot_be_fetched_says_where_and_how(tiny, monkeypatch):
    def offline(name, **kwargs):  # an hf_tokenizer_name config offline: transformers cannot reach the hub
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in "
                      "the cached files.")

    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    with pytest.raises(UserError, match=r"The tokenizer of openclip:tiny-clip is not in the cache .*"
                                        r"`python -c \"import open_clip; open_clip.get_tokenizer\('tiny-clip'\)\"`"):
        load_model("openclip:tiny-clip:random", CPU)


def test_suite_decoding_equals_open_clips_default_transform(tiny):
    """Suites decode image files with transferlab's own resize and crop: for open_clip's default preprocessing
    (shortest side, bicubic) those are open_clip's pixels exactly (docs/evaluation.md, Preprocessing)."""
    import io

    from transferlab.data.images import decode_image

    _, weights = tiny
    encoder = load_model(f"openclip:tiny-clip:{weights}", CPU).encoder
    for image in images():
        png = io.BytesIO()
        image.save(png, format="PNG")
        assert torch.equal(decode_image(png.getvalue(), encoder.image_size, 3), encoder.decode(image))
