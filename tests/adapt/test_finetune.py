from __future__ import annotations

import pytest
import torch

from transferlab.adapt.finetune import (
    default_lora_targets,
    finetune,
)
from transferlab.config import load_recipe
from transferlab.errors import UserError
from transferlab.evaluate.zeroshot import zeroshot_classify
from transferlab.models.dual_encoder import DualEncoder
from transferlab.models.encoder import zeroshot_weights

NAMES = ["top left", "top right", "bottom left", "bottom right"]
TEMPLATES = ["a square at the {}.", "{}"]
TINY_MODEL = ["model.image.name=cnn-tiny", "model.text.name=text-transformer-tiny", "model.text.locked=false",
              "model.embed_dim=16"]  # conftest's tiny towers


def tiny_model(overrides=()) -> DualEncoder:
    torch.manual_seed(0)
    return DualEncoder(load_recipe(None, TINY_MODEL + list(overrides)).model).eval()


def squares(per_class: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, 1, 28, 28] noise with a bright square in the quadrant of the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(NAMES)).repeat_interleave(per_class)
    images = torch.randint(0, 80, (len(labels), 1, 28, 28), generator=g, dtype=torch.uint8)
    for i, label in enumerate(labels.tolist()):
        top, left = 14 * (label // 2) + 3, 14 * (label % 2) + 3
        images[i, :, top:top + 8, left:left + 8] = 255
    return images, labels


def state(model: DualEncoder) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def run(model, method="lora", epochs=4, **options):
    images, labels = squares()
    return finetune(model, images, labels, NAMES, TEMPLATES, method=method, epochs=epochs, batch_size=8,
                    progress=False, **options)


def test_zeroshot_head_is_the_zeroshot_classifier_before_training():
    model = tiny_model()
    images, labels = squares()
    tuned = run(model, epochs=0)
    with torch.no_grad():
        embeddings = model.encode_image(model.preprocess(images))
        _, expected = zeroshot_classify(embeddings, zeroshot_weights(model.encode_text, NAMES, TEMPLATES), labels)
        torch.testing.assert_close(tuned.head.weight, zeroshot_weights(model.encode_text, NAMES, TEMPLATES))
        predicted = tuned.head(tuned.model.encode_image(tuned.model.preprocess(images))).argmax(1)
    assert torch.equal(predicted, expected) and tuned.config["head_init"] == "zeroshot"
    random = finetune(model, images, labels, num_classes=4, epochs=0, progress=False)
    assert random.config["head_init"] == "random" and random.head.weight.shape == (4, 16)
    torch.testing.assert_close(random.head.weight.norm(dim=1), torch.ones(4))


@pytest.mark.parametrize("method", ["full", "lora"])
def test_loss_falls(method):
    tuned = run(tiny_model(), method=method, epochs=6, lr={"full": 3e-3, "lora": 1e-2}[method])
    assert len(tuned.losses) == 6 * 4 and tuned.config["steps"] == 24  # 32 images in batches of 8
    assert sum(tuned.losses[-4:]) / 4 < 0.5 * sum(tuned.losses[:4]) / 4


def test_full_finetuning_changes_the_tower_and_leaves_the_input_model():
    model = tiny_model()
    pretrained = state(model)
    tuned = run(model, method="full", epochs=2)
    after = tuned.model.state_dict()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in pretrained.items())  # a copy was tuned
    changed = {k for k in pretrained if not torch.equal(pretrained[k], after[k])}
    assert "image_tower.features.0.0.weight" in changed and "image_proj.weight" in changed
    assert "image_tower.features.0.1.running_mean" in changed  # batch norm trains in full fine-tuning
    assert not any(k.startswith(("text_tower.", "text_proj.")) for k in changed) and "logit_scale" not in changed


def test_lora_changes_only_adapted_weights_and_merges_to_the_original_keys():
    model = tiny_model()
    pretrained = state(model)
    tuned = run(model, method="lora", epochs=2)
    after = tuned.model.state_dict()
    assert list(after) == list(pretrained) and all(after[k].shape == v.shape for k, v in pretrained.items())
    assert not any("lora" in k for k in after)
    targets = default_lora_targets(model.image_tower)
    assert targets == ["features.0.0", "features.1.0", "features.3.0", "features.4.0", "features.6.0"]
    changed = {k for k in pretrained if not torch.equal(pretrained[k], after[k])}
    assert changed == {f"image_tower.{t}.weight" for t in targets}  # batch norm statistics stay frozen
    assert all(p.requires_grad == model.get_parameter(k).requires_grad for k, p in tuned.model.named_parameters())


def test_lora_trainable_parameters_by_hand():
    rank, k, d = 4, len(NAMES), 16
    vit = tiny_model(["model.image.name=vit-tiny"])
    tuned = run(vit, epochs=0, lora_rank=rank, lora_targets=["blocks.layers.0.linear1"])
    assert tuned.config["trainable_parameters"] == rank * (96 + 192) + k * d  # A [r, 96], B [192, r]; the head
    cnn = tiny_model()
    tuned = run(cnn, epochs=0, lora_rank=rank, lora_targets=["features.1.0"])
    # a 3x3 conv 8 -> 8: A is an r-channel 3x3 conv (r·8·9), B a 1x1 conv back to 8 channels (8·r)
    assert tuned.config["trainable_parameters"] == rank * 8 * 9 + 8 * rank + k * d


@pytest.mark.parametrize("tower", ["image", "text"])
def test_lora_on_transformer_towers_merges_attention_and_mlp(tower):
    model = tiny_model(["model.image.name=vit-tiny"])
    pretrained = state(model)
    images, labels = squares()
    tuned = run(model, method="lora", epochs=2, tower=tower, lr=1e-2)
    after = tuned.model.state_dict()
    assert set(after) == set(pretrained) and all(after[k].shape == v.shape for k, v in pretrained.items())
    changed = {k for k in pretrained if not torch.equal(pretrained[k], after[k])}
    expected = {f"{tower}_tower.blocks.layers.{i}.{name}" for i in range(4 if tower == "image" else 2)
                for name in ("self_attn.in_proj_weight", "self_attn.out_proj.weight", "linear1.weight",
                             "linear2.weight")}
    assert changed == expected
    fresh = DualEncoder(tuned.model.spec).eval()  # the merged weights load into a plain model of the recipe
    fresh.load_saved_state_dict(tuned.model.saved_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh.encode_image(fresh.preprocess(images)),
                                   tuned.model.encode_image(tuned.model.preprocess(images)))
        if tower == "text":  # the head is the tuned text tower's zero-shot classifier
            torch.testing.assert_close(tuned.head.weight, zeroshot_weights(fresh.encode_text, NAMES, TEMPLATES))


def test_deterministic_for_a_seed():
    model = tiny_model()
    first, again, other = run(model, seed=5), run(model, seed=5), run(model, seed=6)
    assert first.losses == again.losses
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in first.model.state_dict().items())
    assert torch.equal(first.head.weight, again.head.weight)
    assert first.losses != other.losses


def test_text_tower_finetuning_keeps_the_image_tower_and_unlocks_the_spec():
    model = tiny_model(["model.text.locked=true"])
    pretrained = state(model)
    tuned = run(model, method="full", tower="text", epochs=2, lr=1e-3)
    after = tuned.model.state_dict()
    changed = {k for k in pretrained if not torch.equal(pretrained[k], after[k])}
    assert changed and all(k.startswith(("text_tower.", "text_proj.")) for k in changed)
    assert model.spec.text.locked and not tuned.model.spec.text.locked
    assert all(p.requires_grad for p in tuned.model.text_tower.parameters())


def test_bad_requests_are_user_errors():
    model = tiny_model()
    images, labels = squares(per_class=1)
    with pytest.raises(UserError, match="'full' or 'lora'"):
        finetune(model, images, labels, NAMES, method="adapter", progress=False)
    with pytest.raises(UserError, match="num_classes"):
        finetune(model, images, labels, progress=False)
    with pytest.raises(UserError, match="pass classnames"):
        finetune(model, images, labels, num_classes=4, tower="text", progress=False)
    with pytest.raises(UserError, match="DualEncoder"):
        finetune(torch.nn.Linear(4, 4), images, labels, NAMES, progress=False)
    with pytest.raises(UserError, match="adaptable modules"):
        finetune(model, images, labels, NAMES, method="lora", lora_targets=["no_such_layer"], progress=False)


@pytest.mark.slow
def test_minilm_text_tower_lora_merges_query_and_value():
    model = tiny_model(["model.text.name=minilm-l6", "model.text.locked=true"])
    pretrained = state(model)
    tuned = run(model, method="lora", tower="text", epochs=1, lr=1e-2)
    after = tuned.model.state_dict()
    assert set(after) == set(pretrained)
    changed = {k for k in pretrained if not torch.equal(pretrained[k], after[k])}
    assert changed and all(k.endswith(("query.weight", "value.weight")) for k in changed)
    assert set(tuned.model.saved_state_dict()) == set(after)  # the tuned external tower is saved now
