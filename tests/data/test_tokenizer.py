from __future__ import annotations

import pytest
import torch

from transferlab.data.tokenizer import ByteTokenizer

tok = ByteTokenizer()


@pytest.mark.parametrize("text", ["a photo of a cat", "", "naïve café — 日本語 🐈", "two\nlines\ttab"])
def test_round_trip(text):
    batch = tok([text])
    assert batch["input_ids"].shape == (1, len(text.encode("utf-8")) + 2)
    assert tok.decode(batch["input_ids"][0]) == text


def test_special_ids_and_layout():
    assert (tok.PAD, tok.BOS, tok.EOS, tok.vocab_size) == (256, 257, 258, 259)
    batch = tok(["ab", "abcd"])
    assert batch["input_ids"].tolist() == [[257, 97, 98, 258, 256, 256], [257, 97, 98, 99, 100, 258]]
    assert batch["attention_mask"].tolist() == [[True] * 4 + [False] * 2, [True] * 6]
    assert batch["input_ids"].dtype == torch.long and batch["attention_mask"].dtype == torch.bool


def test_empty_string_is_bos_eos():
    assert tok([""])["input_ids"].tolist() == [[257, 258]]


def test_dynamic_length_pads_to_longest_not_context():
    assert tok(["a", "abc"], context_length=64)["input_ids"].shape == (2, 5)
    assert tok(["x" * 100], context_length=16)["input_ids"].shape == (1, 16)


def test_truncation_keeps_eos_last():
    batch = tok(["x" * 100, "short"], context_length=10)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (2, 10)
    assert ids[0].tolist() == [257] + [120] * 8 + [258]
    assert mask[0].all()
    assert ids[1, mask[1].sum() - 1] == tok.EOS
    assert tok.decode(ids[0]) == "x" * 8


def test_truncation_never_splits_a_character():
    # "é" is two bytes; a cut after 3 body bytes would land inside the second one.
    ids = tok(["éé"], context_length=5)["input_ids"][0].tolist()
    assert ids == [257, 0xC3, 0xA9, 258]
    assert tok.decode(ids) == "é"


def test_mask_matches_non_pad_and_eos_once_per_row():
    batch = tok(["", "hello", "a longer caption\nwith a newline"], context_length=64)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert torch.equal(mask, ids != tok.PAD)
    assert ((ids == tok.EOS).sum(1) == 1).all() and (ids[:, 0] == tok.BOS).all()


def test_deterministic_and_rejects_tiny_context():
    assert torch.equal(tok(["same text"])["input_ids"], tok(["same text"])["input_ids"])
    with pytest.raises(ValueError, match="context_length"):
        tok(["a"], context_length=1)


def test_decode_ignores_specials_and_replaces_invalid_bytes():
    assert tok.decode([257, 104, 105, 258, 256, 256]) == "hi"
    assert tok.decode([0xFF]) == "\ufffd"
