"""LiT: a locked text tower embeds the caption set once; a trainable one runs every step."""

import pytest

from transferlab.config import load_recipe
from transferlab.models.text_transformer import TextTransformer
from transferlab.train.loop import pretrain


@pytest.mark.parametrize(("locked", "expected_calls"), [("true", 1), ("false", 8)])
def test_text_tower_calls(tiny_overrides, tmp_path, monkeypatch, locked, expected_calls):
    calls = []
    original = TextTransformer.forward

    def counted(self, tokens):
        calls.append(len(tokens["input_ids"]))
        return original(self, tokens)

    monkeypatch.setattr(TextTransformer, "forward", counted)
    recipe = load_recipe(None, tiny_overrides + [f"model.text.locked={locked}"])
    model = pretrain(recipe, tmp_path)
    assert len(calls) == expected_calls  # 8 steps; mnist5k has 10 classes x 5 templates = 50 captions
    if locked == "true":
        assert calls == [50]
        assert not any(p.requires_grad for p in model.text_tower.parameters())
        assert any(p.requires_grad for p in model.text_proj.parameters())
