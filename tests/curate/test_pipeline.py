"""The curation as a whole: bad input, the stages run one by one and shard by shard, the report, the CLI."""

import gzip
import hashlib
import json
import re
from xml.etree import ElementTree

import pytest
from typer.testing import CliRunner

from tests.curate.pools import caption_pool, read_shard, write_shard
from transferlab.cli import app
from transferlab.curate import Settings, curate
from transferlab.errors import UserError


def snapshot(*paths):
    """The bytes and modification time of every file in `paths` (files or folders)."""
    files = [f for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file()]
    return {f: (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns) for f in files}


def invoke(*args):
    result = CliRunner().invoke(app, ["curate", *map(str, args)])
    return result.exit_code, " ".join(result.output.split())


def mixed_pool(tmp_path):
    """Three shards: one plain, one with a sample lacking its caption, one cut off in the middle."""
    words = ["cat", "dog", "bird", "car", "tree"]
    plain = [{"__key__": f"p{i}", "txt": f"a {words[i % 5]} number {i}", "jpg": f"p{i}".encode()}
             for i in range(30)]
    holes = [{"__key__": f"h{i}", "txt": f"the {words[i % 5]} in photo {i}", "jpg": f"h{i}".encode()}
             for i in range(10)] + [{"__key__": "h-no-caption", "jpg": b"pixels"}]
    pool = tmp_path / "pool"
    write_shard(pool / "a.tar", plain)
    write_shard(pool / "b.tar", holes)
    cut = write_shard(pool / "c.tar", [{"__key__": f"c{i}", "txt": f"one more cat, {i}", "jpg": bytes(100 + i)}
                                       for i in range(8)])
    cut.write_bytes(cut.read_bytes()[:5000])  # 2048 bytes per sample: the tar ends inside the third
    metadata = tmp_path / "entries.txt"
    metadata.write_text("cat\n\ndog\nbird\nCat\n  \ncar\n")
    return pool, metadata


def test_bad_input_is_counted_and_the_input_left_alone(tmp_path):
    pool, metadata = mixed_pool(tmp_path)
    before = snapshot(pool, metadata)
    code, output = invoke(pool, "--out", tmp_path / "out", "--metadata", metadata, "--cap", 5, "--workers", 1)
    assert code == 0, output
    assert snapshot(pool, metadata) == before
    record = json.loads((tmp_path / "out" / "curation.json").read_text())
    assert record["pairs"] == 30 + 11 + 2  # the cut shard's samples before the damage are read
    assert record["removed"]["missing caption"] == 1
    assert record["tar_skips"] == {"corrupt shard": 1} and record["corrupt_shards"] == ["c.tar"]
    assert record["metadata"]["blank_lines"] == 2 and record["metadata"]["duplicate_lines"] == 1
    assert record["metadata"]["duplicates"] == [{"line": 5, "repeats_line": 1, "entry": "Cat"}]
    assert record["kept"] + sum(record["removed"].values()) == record["pairs"]
    assert "skipped by the tar reader 1: corrupt shard" in output
    # kept samples are copied member for member
    originals = {**read_shard(pool / "a.tar"), **read_shard(pool / "b.tar")}
    for shard in ("a.tar", "b.tar", "c.tar"):
        for key, members in read_shard(tmp_path / "out" / shard).items():
            assert members == originals.get(key, members) and set(members) == {"txt", "jpg"}


def test_stage_by_stage_and_shard_by_shard_equals_one_run(tmp_path):
    pool, metadata = mixed_pool(tmp_path)
    write_shard(tmp_path / "d.tar", [{"__key__": f"d{i}", "txt": f"a dog and a cat, {i}"} for i in range(9)])
    gzipped = pool / "d.tar.gz"
    gzipped.write_bytes(gzip.compress((tmp_path / "d.tar").read_bytes()))
    shards = sorted(pool.glob("*.tar")) + [gzipped]
    settings = Settings(metadata=metadata, cap=4, seed=5)
    whole = curate(shards, tmp_path / "whole", settings, workers=1)
    for shard in shards:  # as separate jobs would, each on one shard
        curate([shard], tmp_path / "split", settings, stage="count")
    curate(shards, tmp_path / "split", settings, stage="plan")
    for shard in shards[::-1]:
        curate([shard], tmp_path / "split", settings, stage="sample")
    split = curate(shards, tmp_path / "split", settings, stage="report")
    for shard in ("a.tar", "b.tar", "c.tar", "d.tar"):
        assert (tmp_path / "whole" / shard).read_bytes() == (tmp_path / "split" / shard).read_bytes()
    ignore = {"created", "out"}
    assert {k: v for k, v in whole.items() if k not in ignore} == {k: v for k, v in split.items() if k not in ignore}
    tables = [(tmp_path / run / "entry_counts.tsv").read_text() for run in ("whole", "split")]
    assert tables[0] == tables[1]


def test_stages_check_each_other(tmp_path):
    pool, metadata = mixed_pool(tmp_path)
    settings = Settings(metadata=metadata, cap=4)
    curate([pool / "a.tar"], tmp_path / "out", settings, stage="count")
    with pytest.raises(UserError, match=r"b\.tar\.count\.npz does not exist: run .*--stage count"):
        curate(pool, tmp_path / "out", settings, stage="plan")
    curate(pool, tmp_path / "out", settings, stage="count")
    with pytest.raises(UserError, match="other options"):
        curate(pool, tmp_path / "out", Settings(metadata=metadata, cap=5), stage="plan")
    write_shard(pool / "a.tar", [{"__key__": "x", "txt": "a cat"}])  # edited after counting
    with pytest.raises(UserError, match="a.tar changed since it was counted"):
        curate(pool, tmp_path / "out", settings, stage="plan")


def test_a_finished_curation_is_not_redone(tmp_path):
    caption_pool(tmp_path / "pool", [f"caption {i}" for i in range(20)], shards=2)
    curate(tmp_path / "pool", tmp_path / "out")
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.npz")}
    stamps.update({p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.tar")})
    curate(tmp_path / "pool", tmp_path / "out")
    again = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.npz")}
    again.update({p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.tar")})
    counted = {name for name in stamps if name.endswith((".count.npz", ".sample.npz", ".tar"))}
    assert {name: again[name] for name in counted} == {name: stamps[name] for name in counted}


def test_a_curated_shard_cut_short_is_written_again_and_only_work_files_are_fsynced(tmp_path, monkeypatch):
    import os

    caption_pool(tmp_path / "pool", [f"caption {i}" for i in range(20)], shards=2)
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))
    curate(tmp_path / "pool", tmp_path / "out")
    assert not [path for path in synced if ".tar.tmp-" in path]  # the curated shards: written back by the OS
    assert len([path for path in synced if ".sample.npz.tmp-" in path]) == 2  # their records: durable first
    whole = (tmp_path / "out" / "shard-0000.tar").read_bytes()
    (tmp_path / "out" / "shard-0000.tar").write_bytes(whole[:1024])  # as a power cut may leave it
    curate(tmp_path / "pool", tmp_path / "out")
    assert (tmp_path / "out" / "shard-0000.tar").read_bytes() == whole


def test_shards_are_sampled_again_when_the_plan_changes(tmp_path):
    (tmp_path / "entries.txt").write_text("cat\n")
    caption_pool(tmp_path / "pool", [f"a cat, {i}" for i in range(40)], shards=2)
    settings = Settings(metadata=tmp_path / "entries.txt", cap=30)
    curate(tmp_path / "pool", tmp_path / "out", settings)
    write_shard(tmp_path / "pool" / "shard-0002.tar", [{"__key__": f"x{i}", "txt": f"cat {i}"} for i in range(200)])
    grown = curate(tmp_path / "pool", tmp_path / "out", settings)  # c = 240 now: the first shards keep fewer
    fresh = curate(tmp_path / "pool", tmp_path / "fresh", settings)
    assert grown["kept"] == fresh["kept"] < 60
    for name in ("shard-0000.tar", "shard-0001.tar", "shard-0002.tar"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


def test_output_never_overwrites_data(tmp_path):
    caption_pool(tmp_path / "pool", ["a caption"])
    with pytest.raises(UserError, match="never writes into its input"):
        curate(tmp_path / "pool", tmp_path / "pool")
    write_shard(tmp_path / "theirs" / "shard-0000.tar", [{"__key__": "k", "txt": "someone's data"}])
    with pytest.raises(UserError, match="not a curation's output"):
        curate(tmp_path / "pool", tmp_path / "theirs")
    caption_pool(tmp_path / "other", ["x"])
    with pytest.raises(UserError, match="would both be curated into"):
        curate([tmp_path / "pool" / "shard-0000.tar", tmp_path / "other" / "shard-0000.tar"], tmp_path / "out")


def test_report_has_plots_and_escaped_examples(tmp_path):
    captions = [f"{'cat' if i % 3 else 'dog'} picture {i}" for i in range(300)]
    captions += ["<script>alert(1)</script> no entry", "cat picture 1"]
    caption_pool(tmp_path / "pool", captions, shards=3)
    (tmp_path / "entries.txt").write_text("cat\ndog\n")
    record = curate(tmp_path / "pool", tmp_path / "out", Settings(metadata=tmp_path / "entries.txt", cap=20))
    page = (tmp_path / "out" / "report.html").read_text()
    figures = re.findall(r"<figure>(.*?)</figure>", page, flags=re.S)
    charts = [re.findall(r"<svg .*?</svg>", figure, flags=re.S) for figure in figures]
    assert [len(c) for c in charts] == [2, 1]  # the counts panels, then the removed pairs
    drawn = [ElementTree.fromstring(chart).findall(".//*[@class]") for figure in charts for chart in figure]
    assert [sum(e.get("class") in ("line", "points", "bar") for e in d) for d in drawn] == [2, 2, 4]
    assert "Entry counts" in page and "What each step removed" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; no entry" in page and "<script>" not in page
    for reason in ("no metadata match", "not sampled", "exact duplicate"):
        assert f"{reason}</h3>" in page and 1 <= len(record["examples"][reason]) <= 4
    assert record["metadata"]["entries_over_cap"] == 2
    assert [e["entries"] for e in record["examples"]["not sampled"]][0] in (["cat"], ["dog"])


def test_cli_stages_and_errors(tmp_path):
    caption_pool(tmp_path / "pool", [f"a cat number {i}" for i in range(12)], shards=2)
    (tmp_path / "entries.txt").write_text("cat\n")
    common = ["--out", tmp_path / "out", "--metadata", tmp_path / "entries.txt", "--cap", 3, "--min-words", 2]
    code, output = invoke(tmp_path / "pool" / "shard-0000.tar", *common, "--stage", "count")
    assert code == 0 and "next: --stage plan" in output
    code, output = invoke(tmp_path / "pool", *common, "--stage", "plan")
    assert code == 2 and "shard-0001.tar.count.npz does not exist" in output and "Traceback" not in output
    code, output = invoke(tmp_path / "pool", *common, "--workers", 1)
    assert code == 0 and "12 pairs read" in output and "report.html" in output
    code, output = invoke(tmp_path / "pool", "--out", tmp_path / "o2", "--metadata", tmp_path / "none.txt")
    assert code == 2 and "none.txt does not exist" in output
    code, output = invoke(tmp_path / "pool", "--out", tmp_path / "o3", "--stage", "counts")
    assert code == 2 and "Unknown curation stage 'counts'" in output
    code, output = invoke(tmp_path / "nothing-here", "--out", tmp_path / "o4")
    assert code == 2 and "No shards match" in output


def test_count_files_of_an_older_format_are_counted_again_and_refused_by_sample(tmp_path):
    import numpy as np

    from transferlab.curate import workfiles
    from transferlab.curate.count import FORMAT

    shards = caption_pool(tmp_path / "pool", [f"a cat number {i}" for i in range(20)], shards=2)
    metadata = tmp_path / "entries.txt"
    metadata.write_text("cat\n")
    settings = Settings(metadata=metadata, cap=5)
    curate(shards, tmp_path / "out", settings, stage="count")
    file = workfiles.path(tmp_path / "out", "count", shards[0])
    with np.load(file) as stored:
        arrays = {name: stored[name] for name in stored.files if name not in ("fingerprint", "info")}
        info = json.loads(str(stored["info"]))
    info.pop("format")
    workfiles.save(file, settings.fingerprint, info, **arrays)  # as an older transferlab wrote it
    curate(shards, tmp_path / "out", settings, stage="plan")
    with pytest.raises(UserError, match="counted by an older transferlab"):
        curate(shards, tmp_path / "out", settings, stage="sample")
    curate(shards, tmp_path / "out", settings, stage="count")  # counts that shard again
    _, info = workfiles.load(file, settings.fingerprint, "count")
    assert info["format"] == FORMAT
    record = curate(shards, tmp_path / "out", settings)
    assert record["pairs"] == 20


def test_a_sample_file_of_an_older_format_is_refused_by_the_report(tmp_path):
    import numpy as np

    from transferlab.curate import workfiles

    shards = caption_pool(tmp_path / "pool", [f"a cat number {i}" for i in range(20)], shards=2)
    (tmp_path / "entries.txt").write_text("cat\n")
    settings = Settings(metadata=tmp_path / "entries.txt", cap=5)
    curate(shards, tmp_path / "out", settings)
    file = workfiles.path(tmp_path / "out", "sample", shards[1])
    with np.load(file) as stored:  # as an older transferlab wrote it: no per-entry counts of the kept pairs
        arrays = {name: stored[name] for name in stored.files if name not in ("fingerprint", "info", "entry_ids",
                                                                              "entry_counts")}
        info = json.loads(str(stored["info"]))
    workfiles.save(file, settings.fingerprint, info, **arrays)
    with pytest.raises(UserError, match=f"{re.escape(str(file))} was written by an older transferlab.*--stage sample"):
        curate(shards, tmp_path / "out", settings, stage="report")


def test_a_shard_that_cannot_be_decompressed_is_counted_and_the_rest_curated(tmp_path):
    shards = caption_pool(tmp_path / "pool", [f"a cat number {i}" for i in range(12)], shards=2)
    broken = tmp_path / "pool" / "shard-0002.tar.gz"
    broken.write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))  # a gzip header, then nothing a gzip stream holds
    metadata = tmp_path / "entries.txt"
    metadata.write_text("cat\n")
    record = curate([*shards, broken], tmp_path / "out", Settings(metadata=metadata, cap=5), workers=1)
    assert record["pairs"] == 12 and record["tar_skips"] == {"corrupt shard": 1}
    assert record["corrupt_shards"] == ["shard-0002.tar.gz"]
    assert read_shard(tmp_path / "out" / "shard-0002.tar") == {}
