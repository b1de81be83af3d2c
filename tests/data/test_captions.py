"""The deduplicated caption table and its uniform, seeded choice of one caption per image."""

from __future__ import annotations

import torch

from transferlab.data.captions import CaptionTable

CAPTIONS = [["a cat", "a kitten", "a pet"], ["a dog"], ["a pet", "a cat"], ["a dog"]]


def test_identical_captions_are_stored_once():
    table = CaptionTable(CAPTIONS)
    assert sorted(table.texts) == ["a cat", "a dog", "a kitten", "a pet"]
    assert table.counts.tolist() == [3, 1, 2, 1]
    for i, captions in enumerate(CAPTIONS):
        assert [table.texts[j] for j in table.table[i, : len(captions)].tolist()] == captions


def test_sample_returns_only_the_images_own_captions():
    table = CaptionTable(CAPTIONS)
    index = torch.arange(4).repeat(500)
    ids = table.sample(index, torch.Generator().manual_seed(0))
    for i, j in zip(index.tolist(), ids.tolist(), strict=True):
        assert table.texts[j] in CAPTIONS[i]


def test_each_of_three_captions_is_drawn_a_third_of_the_time():
    table = CaptionTable(CAPTIONS)
    draws = 30_000
    ids = table.sample(torch.zeros(draws, dtype=torch.long), torch.Generator().manual_seed(1))
    for caption in CAPTIONS[0]:
        frequency = (ids == table.texts.index(caption)).float().mean().item()
        assert abs(frequency - 1 / 3) < 0.015, (caption, frequency)


def test_sample_depends_only_on_the_seed():
    table = CaptionTable(CAPTIONS)
    index = torch.tensor([0, 2, 0, 2, 0, 2, 0, 2])
    first = table.sample(index, torch.Generator().manual_seed(5))
    assert torch.equal(first, table.sample(index, torch.Generator().manual_seed(5)))
    assert not torch.equal(table.sample(index.repeat(8), torch.Generator().manual_seed(5)),
                           table.sample(index.repeat(8), torch.Generator().manual_seed(6)))
