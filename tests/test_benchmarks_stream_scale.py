"""benchmarks/stream_scale.py (issue 24's pool-scale harness): its pool writer against tarfile, webdataset and a
textbook PNG, its memory sampler against psutil, its targets table on known rows, and a --tiny run end to end."""

import io
import json
import multiprocessing
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
import psutil
import pytest
import webdataset as wds
from PIL import Image

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import stream_scale  # noqa: E402
from _proc_memory import TreePeaks, tree_pss  # noqa: E402
from _stream_scale_report import tables  # noqa: E402
from _tiny_pool import caption, pixels, pool_bytes, read_samples, shard_bytes, write_pool  # noqa: E402


def textbook_png(image: np.ndarray) -> bytes:
    """8-bit RGB PNG of `image`, no scanline filter, its zlib stream from zlib.compress at level 0 (stored)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    raw = b"".join(b"\0" + row.tobytes() for row in image)
    height, width = image.shape[:2]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 0)) + chunk(b"IEND", b""))


def expected_members(first: int, count: int) -> list[tuple[str, bytes]]:
    members = []
    for i in range(first, first + count):
        members += [(f"{i:010d}.png", textbook_png(pixels(i, 1)[0])), (f"{i:010d}.txt", caption(i).encode())]
    return members


def tar_members(tar: tarfile.TarFile) -> list[tuple[str, bytes]]:
    members = []
    for member in tar:
        assert member.isfile() and member.mode == 0o644 and member.mtime == 0 and member.uid == 0
        members.append((member.name, tar.extractfile(member).read()))
    return members


def test_pool_shards_read_back_with_tarfile_and_webdataset(tmp_path):
    pool = write_pool(tmp_path, 25, per_shard=10, processes=2)
    shards = sorted(tmp_path.glob("shard-*.tar"))
    assert [s.name for s in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert pool["bytes"] == sum(s.stat().st_size for s in shards) == pool_bytes(25, 10)
    assert pool["pattern"] == f"{tmp_path}/shard-{{000000..000002}}.tar" and pool["shards"] == 3
    read = []
    for shard in shards:
        with tarfile.open(shard) as tar:  # tarfile checks each header's checksum
            read += tar_members(tar)
        assert shard.read_bytes()[-1024:] == bytes(1024)  # the end-of-archive marker
    assert read == expected_members(0, 25)
    for name, data in read[::2]:
        assert (np.asarray(Image.open(io.BytesIO(data))) == pixels(int(name[:10]), 1)[0]).all()
    samples = list(wds.WebDataset([str(s) for s in shards], shardshuffle=False))
    pairs = [(name[:10], png, text) for (name, png), (_, text) in zip(read[::2], read[1::2], strict=True)]
    assert [(s["__key__"], s["png"], s["txt"]) for s in samples] == pairs
    walked = [sample for shard in shards for sample in read_samples(shard)]
    assert walked == [(key, png, text.decode()) for key, png, text in pairs]
    assert write_pool(tmp_path, 25, per_shard=10)["reused"] and not write_pool(tmp_path, 24, per_shard=10)["reused"]


def test_large_keys_and_distinct_samples():
    with tarfile.open(fileobj=io.BytesIO(shard_bytes(987_654_321, 4).tobytes())) as tar:
        assert tar_members(tar) == expected_members(987_654_321, 4)
    assert len({pixels(i, 1).tobytes() for i in range(0, 70_000, 7)}) == 10_000
    assert len({caption(i) for i in range(1000)}) == 1000
    assert len({len(caption(i)) for i in range(0, 10**9, 10**7)}) == 1


def test_disk_check_names_the_free_space_and_the_fix(tmp_path, monkeypatch):
    gib = 2**30
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100 * gib, 88 * gib, 12 * gib))
    stream_scale.check_disk(tmp_path, 1 * gib)
    with pytest.raises(SystemExit, match=r"12.0 GiB free, and this pool needs 3.0 GiB with 10 GiB to spare.*--workdir"):
        stream_scale.check_disk(tmp_path, 3 * gib)


def _hold(ready, release) -> None:
    block = bytearray(30 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # 30 MiB of private pages
    ready.set()
    release.wait(30)


def test_tree_memory_matches_psutil():
    ctx = multiprocessing.get_context("fork")
    release, ready = ctx.Event(), [ctx.Event() for _ in range(2)]
    children = [ctx.Process(target=_hold, args=(event, release)) for event in ready]
    for child in children:
        child.start()
    try:
        assert all(event.wait(30) for event in ready)
        me = psutil.Process()
        reference = sum(p.memory_full_info().pss for p in [me, *me.children(recursive=True)])
        assert abs(tree_pss(me.pid) - reference) < 0.05 * reference
        peaks = TreePeaks(me.pid)
        peaks.sample()
        assert peaks.processes == 1 + len(me.children(recursive=True)) >= 3
        assert peaks.largest_child_rss >= 30 * 2**20 and peaks.tree_rss > peaks.tree_pss > 60 * 2**20
    finally:
        release.set()
        for child in children:
            child.join()


def _row(measure: str, samples: int, **fields) -> dict:
    return {"benchmark": "stream_scale", "measure": measure, "samples": samples, **fields}


def test_targets_table_on_known_rows():
    m, big = 1_000_000, 10_000_000
    rows = [_row("pool", m, shards=100, bytes=2 * 2**30, processes=2, seconds=9.0, reused=False, caption_bytes=43 * m),
            _row("pool", big, shards=1000, bytes=20 * 2**30, processes=2, seconds=95.0, reused=False,
                 caption_bytes=43 * big)]
    for samples, pss, first in ((m, 800.0, 30.0), (big, 1000.0, 95.0)):
        rows += [_row("pretrain", samples, mode="epochs", cache="cold", first_step_seconds=first,
                      wall_seconds=first + 5, peak_tree_pss_mib=pss, main_vmhwm_mib=600.0),
                 _row("pretrain", samples, mode="epochs", cache="warm", first_step_seconds=8.0, wall_seconds=12.0,
                      peak_tree_pss_mib=2.0 * pss, main_vmhwm_mib=600.0),
                 _row("pretrain", samples, mode="shards", cache="cold", skipped="unknown mode")]
    rows += [_row("mosaicml_conversion", m, conversion_seconds=20.0),
             _row("first_batch", m, plane="transferlab", cache="cold", first_batch_seconds=30.0,
                  peak_tree_pss_mib=900.0, pss_per_sample_bytes=60.0),
             _row("first_batch", m, plane="transferlab", cache="warm", first_batch_seconds=0.4,
                  peak_tree_pss_mib=900.0, pss_per_sample_bytes=50.0),
             _row("first_batch", m, plane="mosaicml", cache="cold", first_batch_seconds=0.3,
                  peak_tree_pss_mib=900.0, pss_per_sample_bytes=100.0),
             _row("first_batch", m, plane="mosaicml", cache="warm", first_batch_seconds=0.25,
                  peak_tree_pss_mib=900.0, pss_per_sample_bytes=90.0)]
    table = tables(rows).splitlines()
    growth = "| 1,000,000 → 10,000,000 | pretrain epochs"
    planes = "| 1,000,000 | data plane"
    for line in ["| 1,000,000 | pretrain epochs cold: time to first step | 30.00 s | ≤ 90.00 s | yes |",
                 "| 10,000,000 | pretrain epochs cold: time to first step | 95.00 s | ≤ 90.00 s | **no** |",
                 "| 10,000,000 | pretrain epochs warm: time to first step | 8.00 s | ≤ 10.00 s | yes |",
                 f"{growth} cold: PSS(10,000,000) / PSS(1,000,000) | 1.25 | ≤ 1.50 | yes |",
                 f"{growth} warm: PSS growth (MiB) | 400.00 | ≤ 781.06 | yes |",  # 9M x (48 + 43) B = 781.06 MiB
                 f"{planes} warm start-up / MosaicML's | 1.60× (0.400 s / 0.250 s) | ≤ 2.00× | yes |",
                 f"{planes} cold start-up / (MosaicML conversion + start-up) | 1.48× (30.00 s / (20.00 + 0.300) s) "
                 "| ≤ 1.00× | **no** |",
                 f"{planes} PSS per sample / MosaicML's (the larger of cold, warm) | 0.60× (60 B / 100 B) | ≤ 1.00× "
                 "| yes |",
                 "| 10,000,000 | pretrain, sampling=shards | cold | skipped: unknown mode | | | | |"]:
        assert line in table
    assert not any("shards" in line and "≤" in line for line in table)  # a skipped mode has no target rows


FIELDS = {
    "pool": {"samples", "shards", "bytes", "seconds", "processes", "pattern", "caption_bytes", "reused"},
    "pretrain": {"samples", "mode", "cache", "first_step_seconds", "wall_seconds", "peak_tree_pss_mib",
                 "main_vmhwm_mib", "peak_tree_rss_mib", "processes"},
    "mosaicml": {"samples", "skipped"},
    "first_batch": {"samples", "plane", "cache", "repeat", "workers", "first_batch_seconds", "import_seconds",
                    "pss_before_open_mib", "tree_pss_at_first_batch_mib", "peak_tree_pss_mib", "pss_per_sample_bytes"},
}


@pytest.mark.slow
def test_tiny_run_reports_every_measurement_and_leaves_nothing(tmp_path):
    work = tmp_path / "work"
    run = subprocess.run([sys.executable, str(BENCHMARKS / "stream_scale.py"), "--tiny", "--modes", "epochs,no-such",
                          "--steps", "2", "--batch-size", "64", "--workdir", str(work)],
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [(r["measure"], r.get("mode") or r.get("plane"), r.get("cache")) for r in rows] == [
        ("pool", None, None), ("pretrain", "epochs", "cold"), ("pretrain", "epochs", "warm"),
        ("pretrain", "no-such", "cold"), ("pretrain", "no-such", "warm"), ("mosaicml", None, None),
        ("first_batch", "transferlab", "cold"), ("first_batch", "transferlab", "warm")]
    for row in rows:
        wanted = {"samples", "mode", "cache", "skipped"} if "skipped" in row and row["measure"] == "pretrain" \
            else FIELDS[row["measure"]]
        assert wanted <= row.keys(), (row, wanted - row.keys())
        assert row["benchmark"] == "stream_scale" and row["samples"] == stream_scale.TINY
    pool, cold, warm, rejected = rows[:4]
    assert pool["shards"] == 2 and pool["bytes"] == pool_bytes(stream_scale.TINY, stream_scale.TINY // 2)
    assert cold["pool_in_page_cache"] and "train.sampling" in rejected["skipped"]
    for run_row in (cold, warm):
        assert 0 < run_row["first_step_seconds"] < run_row["wall_seconds"]
        assert run_row["processes"] >= 3 and 0 < run_row["peak_tree_pss_mib"] < run_row["peak_tree_rss_mib"]
    for plane in rows[6:]:
        assert plane["first_batch_seconds"] > 0 and plane["peak_tree_pss_mib"] >= plane["pss_before_open_mib"] > 0
    assert "| pool | target (issue 24) | measured | bar | met |" in run.stdout
    assert "pretrain epochs warm: time to first step" in run.stdout
    assert list(work.iterdir()) == []  # the pool, caches and runs are deleted
