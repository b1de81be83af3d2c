"""MetaCLIP balancing against its definition, on pools whose entry counts are known by construction."""

import hashlib

import numpy as np
import pytest
from scipy.stats import binom

from tests.curate.pools import caption_pool, kept_keys
from transferlab.curate import Settings, curate
from transferlab.curate.balance import balanced_keep, key_hash, key_hashes, probabilities, uniforms

CAP = 100
COUNTS = [1, 5, 20, 50, 99, 100, 101, 200, 400, 1000, 2500, 0]  # pairs per entry e00, e01, ...
UNMATCHED = 40


def known_pool(tmp_path, shards=4):
    """Each caption names one entry (and a number that makes it unique); some name none."""
    captions = [f"photo {n} of e{entry:02d}, outdoors" for entry, count in enumerate(COUNTS) for n in range(count)]
    captions += [f"photo {n} of nothing listed" for n in range(UNMATCHED)]
    order = np.random.default_rng(0).permutation(len(captions))  # entries spread over the shards
    metadata = tmp_path / "entries.txt"
    metadata.write_text("".join(f"e{entry:02d}\n" for entry in range(len(COUNTS))))
    caption_pool(tmp_path / "pool", [captions[i] for i in order], shards=shards)
    return tmp_path / "pool", metadata


def read_counts(out):
    rows = [line.split("\t") for line in (out / "entry_counts.tsv").read_text().splitlines()[1:]]
    return [int(r[1]) for r in rows], [int(r[2]) for r in rows]


def test_counts_and_keeps_match_the_definition(tmp_path):
    pool, metadata = known_pool(tmp_path)
    record = curate(pool, tmp_path / "out", Settings(metadata=metadata, cap=CAP, seed=7))
    before, after = read_counts(tmp_path / "out")
    assert before == COUNTS
    for count, kept in zip(COUNTS, after, strict=True):
        if count <= CAP:
            assert kept == count  # the tail keeps every pair
        else:
            low, high = binom.interval(0.999, count, CAP / count)  # the head keeps about t
            assert low <= kept <= high, (count, kept, low, high)
    assert record["removed"]["no metadata match"] == UNMATCHED
    assert record["kept"] == sum(after) == len(kept_keys(tmp_path / "out"))
    assert record["removed"]["not sampled"] == sum(COUNTS) - sum(after)
    assert record["pairs"] == sum(COUNTS) + UNMATCHED


def test_pairs_matching_several_entries_stay_if_any_entry_samples_them(tmp_path):
    both = [f"alpha and beta, {n}" for n in range(1000)]
    alone = [f"only alpha {n}" for n in range(1000)]
    caption_pool(tmp_path / "pool", both + alone, shards=2)
    (tmp_path / "entries.txt").write_text("alpha\nbeta\n")
    curate(tmp_path / "pool", tmp_path / "out", Settings(metadata=tmp_path / "entries.txt", cap=CAP))
    kept = kept_keys(tmp_path / "out")
    p_alpha, p_beta = CAP / 2000, CAP / 1000
    for keys, p in ((range(1000), 1 - (1 - p_alpha) * (1 - p_beta)), (range(1000, 2000), p_alpha)):
        count = sum(f"s{i:07d}" in kept for i in keys)
        low, high = binom.interval(0.999, 1000, p)
        assert low <= count <= high, (count, p)


def tars(out):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(out.glob("*.tar"))}


def test_same_seed_same_result_for_any_number_of_workers(tmp_path, monkeypatch):
    from transferlab.curate import pipeline

    pool, metadata = known_pool(tmp_path)
    settings = Settings(metadata=metadata, cap=CAP, seed=3)
    curate(pool, tmp_path / "one", settings, workers=1)
    for method in ("fork", "spawn"):  # workers forked (Linux, no torch loaded) or spawned
        monkeypatch.setattr(pipeline, "start_method", lambda method=method: method)
        curate(pool, tmp_path / method, settings, workers=2)
        assert tars(tmp_path / "one") == tars(tmp_path / method)
    curate(pool, tmp_path / "other-seed", Settings(metadata=metadata, cap=CAP, seed=4))
    assert kept_keys(tmp_path / "other-seed") != kept_keys(tmp_path / "one")
    # the tail is kept whatever the seed; only the head's draws change
    assert read_counts(tmp_path / "other-seed")[1][:6] == read_counts(tmp_path / "one")[1][:6]


def test_result_does_not_depend_on_the_order_shards_are_given_in(tmp_path):
    pool, metadata = known_pool(tmp_path)
    shards = sorted(pool.glob("*.tar"))
    settings = Settings(metadata=metadata, cap=CAP, seed=1)
    curate(shards, tmp_path / "forward", settings)
    curate(shards[::-1], tmp_path / "backward", settings)
    assert tars(tmp_path / "forward") == tars(tmp_path / "backward")


def test_keep_rule_against_a_loop_over_pairs_and_entries():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 500, size=30)
    matches = [sorted(rng.choice(30, size=rng.integers(0, 4), replace=False).tolist()) for _ in range(2000)]
    ptr = np.cumsum([0] + [len(m) for m in matches])
    ids = np.array([e for m in matches for e in m], dtype=np.int32)
    keys = np.array([key_hash("shard.tar", f"k{i}") for i in range(len(matches))], dtype=np.uint64)
    kept = balanced_keep(ptr, ids, keys, counts, 50, seed=9)
    for i, entries in enumerate(matches):
        draws = [uniforms(keys[i:i + 1], np.array([e]), 9)[0] for e in entries]
        assert kept[i] == any(u < min(1.0, 50 / counts[e]) for u, e in zip(draws, entries, strict=True))
    assert probabilities(np.array([0, 10, 100, 1000]), 100).tolist() == [1.0, 1.0, 1.0, 0.1]


def test_key_hashes_are_fnv1a_of_shard_name_nul_and_key_then_splitmix():
    def reference(shard: str, key: bytes) -> int:  # byte by byte, on Python integers
        h = 0xCBF29CE484222325
        for byte in shard.encode() + b"\0" + key:
            h = (h ^ byte) * 0x100000001B3 % 2**64
        for shift, factor in ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB)):
            h = (h ^ (h >> shift)) * factor % 2**64
        return h ^ (h >> 31)

    keys = [b"a", b"s0000001", b"dir/x", "ké".encode(), b"k" * 150, b"a\0b"]  # lengths differ within one array
    assert key_hashes("shard-01.tar", np.array(keys)).tolist() == [reference("shard-01.tar", k) for k in keys]
    assert key_hash("shard-01.tar", "ké") == reference("shard-01.tar", "ké".encode())


@pytest.mark.parametrize("p", [0.01, 0.3, 0.77])
def test_draws_are_uniform(p):
    keys = np.array([key_hash("s.tar", f"{i}") for i in range(20_000)], dtype=np.uint64)
    for entry in (0, 1, 12345):
        hits = int((uniforms(keys, np.full(len(keys), entry), seed=2) < p).sum())
        low, high = binom.interval(0.999, len(keys), p)
        assert low <= hits <= high
    # draws for two entries of one pair are independent: P(both) = p²
    both = (uniforms(keys, np.zeros(len(keys)), 2) < p) & (uniforms(keys, np.ones(len(keys)), 2) < p)
    low, high = binom.interval(0.999, len(keys), p * p)
    assert low <= int(both.sum()) <= high


def test_entry_counts_leave_out_the_pairs_dedup_removed(tmp_path):
    captions = [f"a cat {i}" for i in range(12)] + [f"a dog {i}" for i in range(6)] + ["a cat and a dog"] * 3
    captions += ["a cat 3", "a dog 1", "a cat 3"]  # exact duplicates of earlier pairs, in other shards
    (tmp_path / "entries.txt").write_text("cat\ndog\nbird\n")
    caption_pool(tmp_path / "pool", captions, shards=3)
    record = curate(tmp_path / "pool", tmp_path / "out", Settings(metadata=tmp_path / "entries.txt", cap=1000))
    unique = list(dict.fromkeys(captions))
    expected = [sum(f" {word} " in f" {c} " for c in unique) for word in ("cat", "dog", "bird")]
    assert read_counts(tmp_path / "out")[0] == expected == [13, 7, 0]
    assert record["removed"]["exact duplicate"] == 5
