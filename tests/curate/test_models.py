"""The model steps (near-duplicate images and captions, the score filter) against a direct computation:
embed every pair with the model one at a time, then brute-force cosine similarities and sort scores."""

import io
import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from tests.curate.pools import kept_keys, write_shard
from transferlab.cli import app
from transferlab.curate import Settings, curate
from transferlab.data.images import decode_image
from transferlab.models.references import load_model
from transferlab.models.weights import named_random

pytest.importorskip("open_clip")

TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 2, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
THRESHOLD = 0.9999  # a random-init model maps different inputs close together; copies are still closer


def png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_near_duplicates_and_score_filter_match_a_direct_computation(tmp_path):
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    ref = f"openclip:{config}:random"
    words = ["cat", "dog", "boat", "tree", "house", "car", "bird", "fish"]
    samples = [{"__key__": f"k{i:02d}", "png": png(i), "txt": f"a {words[i % 8]} seen from {i} metres"}
               for i in range(24)]
    samples += [{"__key__": "same-image", "png": samples[3]["png"], "txt": "an unrelated caption"},
                {"__key__": "same-caption", "png": png(99), "txt": samples[5]["txt"]},
                {"__key__": "broken", "png": b"\x89PNG\r\n\x1a\n not an image", "txt": "a broken file"},
                {"__key__": "no-image", "txt": "a caption alone"}]
    shards = [write_shard(tmp_path / "pool" / "a.tar", samples[::2]),
              write_shard(tmp_path / "pool" / "b.tar", samples[1::2])]
    settings = Settings(near_dup_model=ref, near_dup_threshold=THRESHOLD, score_model=ref, score_keep=0.5,
                        device="cpu")
    record = curate(shards, tmp_path / "out", settings)

    encoder = load_model(ref, torch.device("cpu")).encoder
    pool = [s for shard in (samples[::2], samples[1::2]) for s in shard if s["__key__"] not in ("broken", "no-image")]
    with torch.no_grad():
        images = torch.cat([encoder.encode_image(encoder.preprocess(decode_image(s["png"], 16, 3)[None]))
                            for s in pool])
        texts = torch.cat([encoder.encode_text([s["txt"]]) for s in pool])
    images, texts = (torch.nn.functional.normalize(x, dim=1).double().numpy() for x in (images, texts))

    def earlier_copy(embeddings):
        similarity = embeddings @ embeddings.T
        return [bool((similarity[:j, j] >= THRESHOLD).any()) for j in range(len(pool))]

    image_copy, caption_copy = earlier_copy(images), earlier_copy(texts)
    # pool order is shard a (even samples), then b: the copy of k03's image in a comes first
    assert [s["__key__"] for s, copy in zip(pool, image_copy, strict=True) if copy] == ["k03"]
    assert [s["__key__"] for s, copy in zip(pool, caption_copy, strict=True) if copy] == ["same-caption"]
    survivors = [i for i in range(len(pool)) if not image_copy[i] and not caption_copy[i]]
    scores = {i: float(images[i] @ texts[i]) for i in survivors}
    best = sorted(survivors, key=lambda i: -scores[i])[:math.ceil(0.5 * len(survivors))]
    assert kept_keys(tmp_path / "out") == {pool[i]["__key__"] for i in best}
    assert record["removed"] == {"no image": 1, "undecodable image": 1, "near-duplicate image": 1,
                                 "near-duplicate caption": 1, "low score": len(survivors) - len(best)}


@pytest.mark.parametrize("ref, random", [("openclip:ViT-B-32:random", True), ("timm:resnet50:random", True),
                                         ("openclip:my-config.json", True), ("openclip:my-config.json:w.pt", False),
                                         ("openclip:ViT-B-32:laion2b_s34b_b79k", False), ("runs/random-seed", False),
                                         ("hf:openai/clip-vit-base-patch32", False)])
def test_a_reference_that_names_random_weights(ref, random):
    assert named_random(ref) is random


def test_curate_says_when_a_model_it_uses_is_random(tmp_path):
    """Its workers load the models; the console line comes once, from the command, before they start."""
    config = tmp_path / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    shard = write_shard(tmp_path / "pool" / "a.tar", [{"__key__": f"k{i}", "png": png(i), "txt": f"photo {i}"}
                                                      for i in range(6)])
    result = CliRunner().invoke(app, ["curate", str(shard), "--out", str(tmp_path / "out"), "--workers", "1",
                                      "--score-model", f"openclip:{config}", "--score-keep", "0.5", "--device", "cpu"])
    output = " ".join(result.output.split())
    assert result.exit_code == 0, output
    assert output.count("random weights:") == 1 and f"openclip:{config} (--score-model) is a random" in output
