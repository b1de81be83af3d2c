"""The pool index (data/stream/pool_index.py, data/stream/shard_scan.py): the C reader against the careful one,
count files, one build per node, stale caches, and the captions read back from it."""

from __future__ import annotations

import json
import multiprocessing
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data import tars
from transferlab.config import WebDatasetSource
from transferlab.data.caption_column import CaptionColumn
from transferlab.data.captions import CaptionTable, ColumnCaptionTable
from transferlab.data.images import encode_png
from transferlab.data.readers.webdataset import read_webdataset
from transferlab.data.report import DataReport
from transferlab.data.stream import pool_index as pool_module
from transferlab.data.stream import shard_scan
from transferlab.data.stream.pool_index import PoolIndex, pool_index
from transferlab.data.tar import kernels as tar_kernels

PNG = encode_png(torch.zeros(3, 4, 4, dtype=torch.uint8))


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> str:
    """A plain (ustar) shard, the shape the C header walk reads, as the path string a recipe names."""
    return str(tars.write_tar(path, members, tarfile.USTAR_FORMAT))


def pairs(first: int, count: int, caption=lambda i: f"caption {i}".encode(), extra=()) -> list[tuple[str, bytes]]:
    members = []
    for i in range(first, first + count):
        members += [(f"{i:06d}.png", PNG), (f"{i:06d}.txt", caption(i))]
        members += [(f"{i:06d}.{ext}", data(i)) for ext, data in extra]
    return members


CLEAN_SHAPES = {  # shards the C reader takes whole, each testing one of its cases against the careful reader
    "ascii": pairs(0, 5),
    "unicode spaces and marks": pairs(0, 6, lambda i: ["\u3000cat\u3000", " ΟΔΟΣ ", "é", "\u00a0x", "a  b", "t\tt"][
        i].encode()),
    "long captions cut": pairs(0, 2, lambda i: ("x" * 10_050 if i else "é" * 10_001).encode()),
    "json without captions": pairs(0, 3, extra=[("json", lambda i: json.dumps({"url": f"u{i}"}).encode())]),
    "labels": pairs(0, 6, extra=[("cls", lambda i: f" {i % 3} ".encode())]),
    "label-only samples": pairs(0, 4, lambda i: b"" if i % 2 else b"dog", extra=[("cls", lambda i: b"dog")]),
}
CAREFUL_SHAPES = {  # shards the C reader leaves to the careful one
    "lines": pairs(0, 3, lambda i: b"one\ntwo" if i == 1 else b"one"),
    "json captions": pairs(0, 2, extra=[("json", lambda i: json.dumps({"captions": ["a", f"b{i}"]}).encode())]),
    "empty caption": pairs(0, 3, lambda i: b"  " if i == 2 else b"x"),
    "no image": [("a.txt", b"a"), ("b.png", PNG), ("b.txt", b"b")],
    "not utf-8": pairs(0, 2, lambda i: b"\xff" if i else b"ok"),
}


def index_columns(shard: str, spec: WebDatasetSource, known=None) -> dict:
    index = pool_index(spec, "pool", [shard], known)
    return {"meta": {k: v for k, v in index.meta.items() if k not in ("sources",)},
            **{name: np.asarray(column).tolist() for name, column in index.columns.items()}}


@pytest.mark.skipif(tar_kernels.kernels is None, reason="the C tar kernels are not built here")
@pytest.mark.parametrize("shape", sorted({**CLEAN_SHAPES, **CAREFUL_SHAPES}))
def test_the_c_reader_and_the_careful_reader_index_alike(tmp_path, monkeypatch, shape):
    members = {**CLEAN_SHAPES, **CAREFUL_SHAPES}[shape]
    labelled = any(name.endswith(".cls") for name, _ in members)
    spec = WebDatasetSource(source="webdataset", shards="x", label_key="cls" if labelled else None,
                            bad_samples="skip")
    shard = write_tar(tmp_path / "s.tar", members)
    taken = []
    monkeypatch.setattr(shard_scan, "_careful_columns", lambda *a, f=shard_scan._careful_columns: taken.append(1)
                        or f(*a))
    fast = index_columns(shard, spec)
    assert bool(taken) == (shape in CAREFUL_SHAPES)
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "other-cache"))
    monkeypatch.setattr(tar_kernels, "kernels", None)
    slow = index_columns(shard, spec)
    assert fast == slow


def test_the_index_reads_what_the_samples_say(tmp_path):
    shard = write_tar(tmp_path / "s.tar", CLEAN_SHAPES["unicode spaces and marks"] + pairs(6, 1, extra=[]))
    spec = WebDatasetSource(source="webdataset", shards=shard, stream=True)
    data = read_webdataset(spec, "pool", 4, 3, stream=True)
    assert list(data.captions) == [["cat"], ["ΟΔΟΣ"], ["é"], ["x"], ["a  b"], ["t\tt"], ["caption 6"]]
    assert data.images.offset.tolist() == [512 * (1 + 4 * i) for i in range(7)]


def test_labels_are_numbered_as_in_memory_data_numbers_them(tmp_path):
    shards = [write_tar(tmp_path / f"s{j}.tar", pairs(10 * j, 4, extra=[("cls", lambda i: str([10, 9, 2, 10][
        i % 4]).encode())])) for j in range(2)]
    spec = WebDatasetSource(source="webdataset", shards=str(tmp_path / "s{0..1}.tar"), label_key="cls")
    streamed = read_webdataset(spec, "pool", 4, 3, stream=True)
    held = read_webdataset(spec, "pool", 4, 3, stream=False)
    assert streamed.classnames == held.classnames == ["2", "9", "10"]  # numeric order, not text order
    assert streamed.labels.tolist() == held.labels.tolist() == [2, 1, 0, 2, 0, 2, 2, 1]
    assert len(shards) == 2


@pytest.mark.parametrize("convention", ["sizes.json", "wids", "img2dataset"])
def test_count_files_of_each_convention_are_read_and_a_wrong_count_is_noted(tmp_path, convention):
    shards = [write_tar(tmp_path / f"{j:05d}.tar", pairs(10 * j, 3 + j)) for j in range(2)]
    claims = {"00000.tar": 3, "00001.tar": 9}  # the second is wrong: it holds 4
    if convention == "sizes.json":
        (tmp_path / "sizes.json").write_text(json.dumps(claims))
    elif convention == "wids":
        (tmp_path / "shardindex.json").write_text(json.dumps({"__kind__": "wids-shard-index-v1", "wids_version": 1,
                                                              "shardlist": [{"url": name, "nsamples": n}
                                                                            for name, n in claims.items()]}))
    else:
        for name, n in claims.items():
            (tmp_path / name.replace(".tar", "_stats.json")).write_text(json.dumps({"successes": n, "count": 10}))
    from transferlab.data.tar.count_files import published_counts

    assert published_counts(shards) == {shards[0]: 3, shards[1]: 9}
    data = read_webdataset(WebDatasetSource(source="webdataset", shards=str(tmp_path)), "pool", 4, 3, stream=True)
    assert len(data) == 7
    notes = " ".join(data.report.notes)
    assert "00001.tar: a count file beside the pool gives 9 samples, the shard holds 4" in notes
    assert "00000.tar" not in notes


def _index_in_another_process(cache: str, shards: list[str], log: str, out: str) -> None:
    os.environ["TRANSFERLAB_CACHE"] = cache
    scan = shard_scan.scan_shard

    def logged(*job):
        with open(log, "a") as file:
            file.write(f"{job[0]}\n")
        return scan(*job)
    shard_scan.scan_shard = pool_module.scan_shard = logged
    spec = WebDatasetSource(source="webdataset", shards=str(Path(shards[0]).parent))
    Path(out).write_text(str(pool_index(spec, "pool", shards).folder))


def test_two_processes_indexing_one_pool_at_once_build_it_once(tmp_path):
    shards = [write_tar(tmp_path / "pool" / f"{j}.tar", pairs(1000 * j, 300)) for j in range(4)]
    log = tmp_path / "scans.log"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_index_in_another_process, args=(str(tmp_path / "cache"), shards, str(log),
                                                                         str(tmp_path / f"out{i}"))) for i in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    assert (tmp_path / "out0").read_text() == (tmp_path / "out1").read_text()
    assert sorted(log.read_text().split()) == sorted(shards)  # each shard read once, by one of the two
    assert len(list((tmp_path / "cache" / "index" / "v2" / "pools").glob("*/meta.json"))) == 1


def test_a_changed_shard_gets_a_new_index_and_an_old_format_is_rebuilt(tmp_path):
    shard = write_tar(tmp_path / "s.tar", pairs(0, 3))
    spec = WebDatasetSource(source="webdataset", shards=shard)
    first = pool_index(spec, "pool", [shard])
    meta = json.loads((first.folder / "meta.json").read_text())
    (first.folder / "meta.json").write_text(json.dumps({**meta, "format": 1}))  # as an older transferlab left it
    assert PoolIndex.open(first.folder) is None
    again = pool_index(spec, "pool", [shard])
    assert again.folder == first.folder and again.meta["format"] == shard_scan.FORMAT and len(again) == 3
    write_tar(tmp_path / "s.tar", pairs(0, 5))
    os.utime(shard, ns=(1, 1))
    changed = pool_index(spec, "pool", [shard])
    assert changed.folder != first.folder and len(changed) == 5


def test_caption_columns_take_and_concatenate_like_lists():
    lists = [["a"], ["b", "c"], [], ["dé"]]
    column = CaptionColumn.from_lists(lists)
    assert list(column) == lists and len(column) == 4 and column.uncaptioned == 1
    assert list(column.take([3, 0])) == [["dé"], ["a"]] and list(column.take([3, 0]).take([1])) == [["a"]]
    assert list(CaptionColumn.cat([column.take([1]), [["x"]]])) == [["b", "c"], ["x"]]
    assert CaptionColumn.cat([[["a"]], [["b"]]]) == [["a"], ["b"]]
    labelled = CaptionColumn(column.text, column.ends, column.first, np.array([0, 0, 1, 0]), [["t0"], ["one", "two"]])
    assert labelled[2] == ["one", "two"] and labelled[0] == ["a"]


def test_a_column_table_draws_the_texts_the_in_memory_table_draws():
    lists = [["a"], ["b", "c"], ["a"], ["d", "e", "f"], ["b"]] * 3
    memory, column = CaptionTable(lists), ColumnCaptionTable(CaptionColumn.from_lists(lists).take(range(15)))
    index = torch.tensor([4, 3, 1, 0, 2, 14, 8])
    for seed in range(5):
        drawn = [table.texts_of(table.sample(index, torch.Generator().manual_seed(seed))) for table in (memory,
                                                                                                        column)]
        assert drawn[0] == drawn[1]
    rows = [(table.all_rows(index)[0].tolist(), table.texts_of(table.all_rows(index)[1])) for table in (memory, column)]
    assert rows[0] == rows[1]
    same = [(table.first_ids(index)[:, None] == table.first_ids(index)[None]).tolist() for table in (memory, column)]
    assert same[0] == same[1]


def test_a_column_table_fills_label_only_samples_from_templates():
    column = CaptionColumn.from_lists([["x"], [], []])
    labelled = CaptionColumn(column.text, column.ends, column.first, np.array([0, 1, 0]), [["a 0", "b 0"],
                                                                                          ["a 1", "b 1"]],
                             uncaptioned=2)
    table = ColumnCaptionTable(labelled)
    _, ids = table.all_rows(torch.tensor([0, 1, 2]))
    assert table.texts_of(ids) == ["x", "a 1", "b 1", "a 0", "b 0"]
    with pytest.raises(Exception, match="have no caption"):
        ColumnCaptionTable(CaptionColumn(column.text, column.ends, column.first, uncaptioned=2))


def test_the_report_of_a_streamed_pool_counts_what_its_index_skipped(tmp_path):
    shard = write_tar(tmp_path / "s.tar", CAREFUL_SHAPES["empty caption"] + CAREFUL_SHAPES["no image"])
    spec = WebDatasetSource(source="webdataset", shards=shard, bad_samples="skip")
    report = DataReport()
    data = pool_index(spec, "pool", [shard]).dataset("pool", spec, report)
    assert len(data) == 3 and dict(report.skipped) == {"empty caption": 1, "no image": 1} and report.kept == 3


def test_stream_auto_decides_by_the_decoded_size_before_decoding_and_counts_what_it_names(tmp_path, monkeypatch):
    from transferlab.data import memory
    from transferlab.data.readers import webdataset

    folder = tmp_path / "pool"
    for j in range(3):
        write_tar(folder / f"{j}.tar", pairs(100 * j, 10))
    spec = WebDatasetSource(source="webdataset", shards=str(folder))
    assert not read_webdataset(spec, "pool", 8, 3, stream="auto").streamed  # 30 x 3 x 8 x 8 bytes: in memory
    monkeypatch.setattr(webdataset, "STREAM_ABOVE_BYTES", 30 * 3 * 8 * 8 - 1)
    decoded = []
    monkeypatch.setattr(webdataset, "decode_each", lambda *a: decoded.append(1))
    assert read_webdataset(spec, "pool", 8, 3, stream="auto").streamed and not decoded  # one byte more: streamed
    monkeypatch.setattr(memory, "free_memory", lambda: 1000)
    with pytest.raises(Exception, match=r"the 30 images of dataset 'pool' need 0.0 GiB once decoded at 8x8x3 "
                                        r"\(2 copies while they are gathered\).*stream: true"):
        read_webdataset(spec, "pool", 8, 3, stream=False)
