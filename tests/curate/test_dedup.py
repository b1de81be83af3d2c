"""Exact and near deduplication against brute-force references."""

import sys

import numpy as np
import pytest

from tests.curate.pools import kept_keys, write_shard
from transferlab.curate import Settings, curate, dedup
from transferlab.curate.dedup import content_hash, first_occurrences, near_duplicates
from transferlab.curate.metadata import normalise
from transferlab.errors import UserError


def test_content_hash_normalises_the_caption_not_the_image():
    def pair(caption, image):
        return content_hash(normalise(caption), image)
    assert pair("A  cat.", b"img") == pair("a cat .", b"img") == pair(" a CAT. ", b"img")
    assert pair("a cat.", b"img") != pair("a cat.", b"img2")
    assert pair("a cat.", b"") != pair("a cats.", b"")
    assert pair("ab", b"c") != pair("a", b"bc")  # caption and image do not run together


def test_first_occurrences_against_a_loop():
    hashes = np.random.default_rng(0).integers(0, 50, size=400).astype(np.uint64)
    seen, expected = set(), []
    for h in hashes.tolist():
        expected.append(h not in seen)
        seen.add(h)
    assert first_occurrences(hashes).tolist() == expected


def brute_force_near_duplicates(vectors: np.ndarray, threshold: float) -> np.ndarray:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = unit.astype(np.float64) @ unit.T.astype(np.float64)
    return np.array([bool((similarity[:j, j] >= threshold).any()) for j in range(len(vectors))])


@pytest.mark.parametrize("threshold", [0.9, 0.97])
def test_near_duplicates_against_pairwise_cosine(monkeypatch, threshold):
    monkeypatch.setattr(dedup, "QUERY_BLOCK", 64)  # several query blocks, as on a large pool
    rng = np.random.default_rng(1)
    base = rng.normal(size=(150, 12))
    copies = base[rng.integers(0, 150, size=150)] + rng.normal(scale=0.15, size=(150, 12))  # some within reach
    vectors = rng.permutation(np.concatenate([base, 3 * copies]), axis=0).astype(np.float32)  # scale is ignored
    expected = brute_force_near_duplicates(vectors, threshold)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    margins = np.abs(unit @ unit.T - threshold)
    assert margins.min() > 1e-5  # no pair so close to the threshold that float rounding could decide it
    assert 20 < expected.sum() < 250
    assert near_duplicates(vectors, threshold).tolist() == expected.tolist()


def test_near_duplicates_drop_later_copies_even_of_dropped_pairs():
    a, b = np.array([1.0, 0.0]), np.array([np.cos(0.3), np.sin(0.3)])
    c = np.array([np.cos(0.6), np.sin(0.6)])  # a~b and b~c at cos 0.3 > threshold; a and c are further apart
    vectors = np.stack([a, b, c]).astype(np.float32)
    assert near_duplicates(vectors, np.cos(0.35)).tolist() == [False, True, True]
    assert near_duplicates(vectors[:1], 0.5).tolist() == [False]


def test_exact_duplicates_across_and_within_shards(tmp_path):
    first = [{"__key__": "a1", "txt": "A red car.", "jpg": b"car"},
             {"__key__": "a2", "txt": "a  red car .", "jpg": b"car"},  # same pair, other spacing and case
             {"__key__": "a3", "txt": "a red car.", "jpg": b"other car"}]  # same caption, other image
    second = [{"__key__": "b1", "txt": "a RED car.", "jpg": b"car"},
              {"__key__": "b2", "txt": "a blue car", "jpg": b"other car"},
              {"__key__": "b3", "txt": "a blue car", "jpg": b"other car"}]
    shards = [write_shard(tmp_path / "pool" / "one.tar", first), write_shard(tmp_path / "pool" / "two.tar", second)]
    record = curate(shards, tmp_path / "out")
    assert kept_keys(tmp_path / "out") == {"a1", "a3", "b2"}
    assert record["removed"] == {"exact duplicate": 3}
    assert [e["key"] for e in record["examples"]["exact duplicate"]] == ["a2", "b1", "b3"]
    curate(shards[::-1], tmp_path / "reversed")  # the first occurrence in the order given stays
    assert kept_keys(tmp_path / "reversed") == {"b1", "b2", "a3"}
    curate(shards, tmp_path / "kept-all", Settings(dedup=False))
    assert len(kept_keys(tmp_path / "kept-all")) == 6


def test_a_missing_faiss_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(UserError, match="needs faiss"):
        near_duplicates(np.eye(3, dtype=np.float32), 0.9)
