"""Exact and near deduplication against brute-force references."""

import hashlib
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
    # BLAKE2b-64 of the normalised caption, a NUL and the image, read little-endian
    assert pair("a cat", b"img") == int.from_bytes(hashlib.blake2b(b" a cat \x00img", digest_size=8).digest(), "little")


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


def clustered(n: int, d: int, threshold: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n rows in a random order: singletons and clusters of 2-5 noisy copies whose cosine similarity to
    each other lies well above `threshold`, while rows of different clusters lie well below it. Returns the
    rows and the expected mask (every row of a cluster but its first)."""
    rng = np.random.default_rng(seed)
    sizes = np.where(rng.random(n) < 0.2, rng.integers(2, 6, size=n), 1)
    sizes = sizes[:np.searchsorted(np.cumsum(sizes), n) + 1]
    sizes[-1] -= sizes.sum() - n
    label = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    within = rng.uniform(threshold + 0.04, 0.995, size=len(sizes))  # a cluster's cosine similarity, about
    sigma = np.sqrt((1 / within - 1) / d)
    centres = rng.normal(size=(len(sizes), d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    rows = centres[label] + sigma[label, None] * rng.normal(size=(n, d))
    _, first = np.unique(label, return_index=True)
    expected = np.ones(n, dtype=bool)
    expected[first] = False
    return (rng.uniform(0.5, 2.0, size=(n, 1)) * rows).astype(np.float32), expected  # lengths are ignored


class Uneven:
    """Blocks of odd sizes, as shards of a pool give them."""

    def __init__(self, array: np.ndarray) -> None:
        self.array, self.dim = array, array.shape[1]

    def __len__(self) -> int:
        return len(self.array)

    def blocks(self):
        cuts = [0, 1, 778, 779, 5000, 13_001, len(self.array)]
        for start, end in zip(cuts[:-1], cuts[1:], strict=True):
            yield self.array[start:end]


@pytest.fixture(scope="module")
def pool20k():
    vectors, expected = clustered(20_000, 64, 0.9)
    exact = near_duplicates(vectors, 0.9, index="exact")
    assert exact.tolist() == expected.tolist()  # the generator's clusters are the exact search's answer
    assert 2_000 < expected.sum() < 8_000
    return vectors, expected


def test_the_inverted_file_finds_the_exact_drop_mask(pool20k):
    vectors, expected = pool20k
    approximate = near_duplicates(vectors, 0.9, exact_limit=1_000)  # "auto" switches to the inverted file
    assert (approximate & ~expected).sum() == 0  # a pair found is a true pair: same threshold test
    assert (approximate & expected).sum() >= 0.99 * expected.sum()
    assert near_duplicates(Uneven(vectors), 0.9, index="ivf").tolist() == approximate.tolist()


def test_the_inverted_file_is_deterministic(pool20k):
    import faiss

    vectors, _ = pool20k
    one_probe = near_duplicates(vectors, 0.9, index="ivf", nprobe=1)  # the least recall: most room to differ
    threads = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        assert near_duplicates(vectors, 0.9, index="ivf", nprobe=1).tolist() == one_probe.tolist()
    finally:
        faiss.omp_set_num_threads(threads)
    assert near_duplicates(vectors, 0.9, index="ivf", nprobe=1).tolist() == one_probe.tolist()
    assert near_duplicates(vectors, 0.9, index="ivf", nprobe=1, seed=1).sum() > 0.9 * one_probe.sum()


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_both_indexes_against_pairwise_cosine_on_a_small_pool(index):
    vectors, expected = clustered(600, 64, 0.9, seed=3)
    assert brute_force_near_duplicates(vectors, 0.9).tolist() == expected.tolist()
    found = near_duplicates(vectors, 0.9, index=index)
    assert (found & ~expected).sum() == 0 and (found & expected).sum() >= 0.99 * expected.sum()


@pytest.mark.parametrize("index", ["exact", "ivf"])
def test_edge_cases(index):
    assert near_duplicates(np.zeros((0, 8), dtype=np.float32), 0.9, index=index).tolist() == []
    assert near_duplicates(np.ones((1, 8), dtype=np.float32), 0.9, index=index).tolist() == [False]
    same = np.tile(np.random.default_rng(0).normal(size=(1, 8)), (2_000, 1)).astype(np.float32)
    assert near_duplicates(same, 0.9, index=index).tolist() == [False] + [True] * 1_999
    assert near_duplicates(same, 1.0, index=index).tolist() == [False] + [True] * 1_999  # despite rounding
    v, w = np.array([3.0, 4.0, 0.0]), np.array([3.0, 4.0, 0.1])  # cosine 0.9998
    vectors = np.stack([v, w, 2 * v, w]).astype(np.float32)  # at 1.0, only a copy up to length counts
    assert near_duplicates(vectors, 1.0, index=index).tolist() == [False, False, True, True]
    with pytest.raises(ValueError, match="auto, exact or ivf"):
        near_duplicates(vectors, 0.9, index="hnsw")


def test_plan_reads_the_surviving_embeddings_shard_by_shard(tmp_path):
    from pathlib import Path

    from transferlab.curate import workfiles
    from transferlab.curate.plan import ShardEmbeddings

    rng = np.random.default_rng(0)
    shards, arrays = [Path(f"pool/s{i}.tar") for i in range(3)], [rng.normal(size=(k, 4)) for k in (5, 0, 7)]
    for shard, array in zip(shards, arrays, strict=True):
        workfiles.save(workfiles.path(tmp_path, "count", shard), "f", {}, image_embeddings=array.astype(np.float32))
    alive = rng.random(12) < 0.6
    rows = ShardEmbeddings(shards, tmp_path, "f", "image_embeddings", 4, alive, [5, 0, 7])
    assert len(rows) == alive.sum()
    streamed = np.concatenate(list(rows.blocks()))
    assert np.array_equal(streamed, np.concatenate(arrays)[alive].astype(np.float32))
    assert np.array_equal(np.concatenate(list(rows.blocks())), streamed)  # read again, the same
