"""`train.sampling: shards`: whole shards dealt to ranks × loader workers each epoch, a shuffle buffer per reader,
exact resume from the readers' cursors (data/stream/whole_shards.py)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.data.tars import write_tar
from tests.train.test_streaming import STREAMED, assert_same
from transferlab.checkpoints import latest_checkpoint
from transferlab.config import WebDatasetSource, load_recipe
from transferlab.data.images import encode_png
from transferlab.data.stream.whole_shards import Cursor, SlotStream, open_shard_pool
from transferlab.errors import UserError
from transferlab.train import loop

SHARDS = ["train.sampling=shards", "datasets.pool.splits={train: 1}", "train.shuffle_buffer=40"]
PNG = encode_png(torch.zeros(1, 4, 4, dtype=torch.uint8))


def write_pool(folder: Path, sizes: list[int]) -> str:
    first = 0
    for number, size in enumerate(sizes):
        write_tar(folder / f"s{number:02d}.tar", [(f"{i:06d}.{ext}", data) for i in range(first, first + size)
                                                  for ext, data in (("png", PNG), ("txt", f"sample {i}".encode()))])
        first += size
    return str(folder)


def stream_of(pool_path: str, slot: int, slots: int, cursor: Cursor | None = None, buffer: int = 5) -> SlotStream:
    pool = open_shard_pool(WebDatasetSource(source="webdataset", shards=pool_path, splits={"train": 1}), "pool")
    return SlotStream(pool, slot, slots, seed=3, buffer=buffer, cursor=cursor or Cursor())


def test_an_epoch_reads_every_sample_once_across_ranks_and_workers(tmp_path):
    sizes = [3, 20, 7, 1, 12, 9, 4]
    pool_path = write_pool(tmp_path / "pool", sizes)
    seen = []
    for slot in range(4):  # 2 ranks x 2 loader workers
        stream = stream_of(pool_path, slot, 4)
        for _, captions, _, _ in stream:
            if stream.cursor.epoch > 0:
                break
            seen += captions
    assert sorted(seen) == sorted(f"sample {i}" for i in range(sum(sizes)))
    orders = {tuple(sample[1][0] for _, sample in zip(range(20), stream_of(pool_path, 0, 1, buffer=buffer),
                                                      strict=False)) for buffer in (1, 5, 50)}
    assert len(orders) == 3  # the buffer mixes (1: shard order)


def test_a_reader_resumed_from_its_cursor_continues_its_stream(tmp_path):
    pool_path = write_pool(tmp_path / "pool", [13, 8, 11, 5])
    whole = stream_of(pool_path, 1, 2)
    taken, cursors = [], []
    for sample in whole:
        taken.append(sample[1])
        cursors.append(whole.cursor)
        if len(taken) == 70:  # into the fourth epoch
            break
    cuts = (0, 6, 13, 20, 31, 48, 55)
    assert [cursors[cut].epoch for cut in cuts] == [0, 0, 0, 0, 1, 2, 3]  # resumed in epochs 0-3 (epoch >= 2 too)
    for cut in cuts:
        resumed = stream_of(pool_path, 1, 2, cursors[cut])
        rest = [sample[1] for _, sample in zip(range(70 - cut - 1), resumed, strict=False)]
        assert rest == taken[cut + 1:], cut


def test_whole_shards_need_as_many_shards_as_readers_and_no_held_out_split(tiny_overrides, pool, tmp_path):
    with pytest.raises(UserError, match=r"deals whole shards to 8 readers .* has 6 shards"):
        loop.pretrain(load_recipe(None, [*tiny_overrides, *STREAMED, f"datasets.pool.shards={pool}", *SHARDS,
                                         "train.loader_workers=8"]), tmp_path / "few")
    with pytest.raises(UserError, match=r"cannot hold out a val or test split .*splits: \{train: 1\}"):
        loop.pretrain(load_recipe(None, [*tiny_overrides, *STREAMED, f"datasets.pool.shards={pool}",
                                         "train.sampling=shards"]), tmp_path / "split")
    with pytest.raises(UserError, match="train.sampling 'shards' reads one pool"):
        load_recipe(None, [*tiny_overrides, "train.data={mnist5k: 0.5, digits: 0.5}", "train.sampling=shards"])


def test_resuming_under_another_layout_starts_the_next_epoch_and_says_so(tiny_overrides, pool, tmp_path, capsys):
    base = [*tiny_overrides, *STREAMED, f"datasets.pool.shards={pool}", *SHARDS, "eval.datasets=[]"]
    loop.pretrain(load_recipe(None, [*base, "train.loader_workers=2", "train.steps=4"]), tmp_path / "run")
    meta = json.loads((latest_checkpoint(tmp_path / "run") / "meta.json").read_text())
    assert meta["stream_cursors"]["layout"] == [1, 2] and set(meta["stream_cursors"]["cursors"]) == {"0", "1"}
    loop.pretrain(load_recipe(None, [*base, "train.loader_workers=1", "train.steps=6"]), tmp_path / "run",
                  resume=True)
    assert "this run has 1 x 1, so its readers start epoch 1 afresh" in capsys.readouterr().err


KILLS, STEPS = 4, 40


@pytest.mark.slow
def test_sigkills_then_resume_over_http_give_the_uninterrupted_weights(tiny_overrides, served, tmp_path):
    """Shards served by `python -m http.server` (no range requests), two loader workers; killed with SIGKILL at
    random moments, `--resume` with the same command line ends at the uninterrupted run's weights."""
    overrides = [o for o in tiny_overrides if not o.startswith(("train.steps", "train.checkpoint_every"))]
    overrides += [*STREAMED, f"datasets.pool.shards={served}/shard-{{00..05}}.tar", *SHARDS, "eval.datasets=[]",
                  f"train.steps={STEPS}", "train.checkpoint_every=1", "train.log_every=1", "train.loader_workers=2",
                  "train.augment.crop_scale=[0.5, 1.0]"]
    command = [sys.executable, "-m", "transferlab.cli", "pretrain", *[a for o in overrides for a in ("--set", o)]]
    subprocess.run([*command, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    cut, moments = tmp_path / "cut", random.Random(1)
    for _ in range(KILLS):
        process = subprocess.Popen([*command, "--out", str(cut), "--resume"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        before, deadline = latest_checkpoint(cut), time.time() + 120
        while latest_checkpoint(cut) == before and process.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(moments.uniform(0, 0.3))
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read().decode()
            pytest.fail("the run finished before its kills; give it more steps")
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    subprocess.run([*command, "--out", str(cut), "--resume"], check=True, capture_output=True)
    assert_same(load_file(str(latest_checkpoint(tmp_path / "whole") / "model.safetensors")),
                load_file(str(latest_checkpoint(cut) / "model.safetensors")))


@pytest.mark.slow
def test_64mb_shards_served_with_and_without_ranges_train_to_the_weights_from_disk(tiny_overrides, tmp_path,
                                                                                    serve_with_ranges,
                                                                                    serve_without_ranges):
    """Shards of 64 MB (past fsspec's 5 MB read-ahead block, where `python -m http.server`'s missing range support
    shows), from disk, from `python -m http.server` (no ranges) and from a server that answers ranges: each mode
    trains to the same weights from all three."""
    folder = tmp_path / "big"
    folder.mkdir()
    padding = bytes(2**20)  # a member no reader asks for: 64 of them make a 64 MB shard
    for number in range(2):
        write_tar(folder / f"s{number}.tar", [
            (f"{i:06d}.{ext}", data) for i in range(number * 64, number * 64 + 64)
            for ext, data in (("png", encode_png(torch.full((1, 8, 8), i, dtype=torch.uint8))),
                              ("txt", f"digit {i % 10}".encode()), ("bin", padding))])
    assert all(path.stat().st_size >= 64 * 2**20 for path in folder.glob("*.tar"))
    base = [*tiny_overrides, "datasets.pool.source=webdataset", "datasets.pool.stream=true", "train.data=pool",
            "datasets.pool.splits={train: 1}", "eval.datasets=[]", "train.batch_size=16", "train.steps=6",
            "model.image_size=8"]
    places = {"disk": str(folder / "s{0..1}.tar"), "no ranges": f"{serve_without_ranges(folder)}/s{{0..1}}.tar",
              "ranges": f"{serve_with_ranges(folder)}/s{{0..1}}.tar"}
    for mode, extra in {"epochs": ["train.loader_workers=1"],
                        "shards": ["train.sampling=shards", "train.loader_workers=2"]}.items():
        trained = {}
        for place, shards in places.items():
            run = tmp_path / f"{mode}-{place.replace(' ', '-')}"
            loop.pretrain(load_recipe(None, [*base, *extra, f"datasets.pool.shards={shards}"]), run)
            trained[place] = load_file(str(latest_checkpoint(run) / "model.safetensors"))
        assert_same(trained["disk"], trained["no ranges"])
        assert_same(trained["disk"], trained["ranges"])


@pytest.mark.slow
def test_two_ranks_read_uneven_shards_and_resume_exactly_under_torchrun(tiny_overrides, tmp_path):
    """2 ranks × 1 loader worker on shards of 150, 40 and 10 samples, over several epochs: the run never waits
    on a rank, and resumed from a checkpoint halfway (as after a kill there) it ends at the same weights."""
    import shutil

    from tests.torchrun import CLI, torchrun

    data_pool = write_pool(tmp_path / "pool", [150, 40, 10])
    overrides = [o for o in tiny_overrides if not o.startswith(("train.steps", "train.checkpoint_every"))]
    sets = [a for o in [*overrides, *STREAMED, f"datasets.pool.shards={data_pool}", *SHARDS, "eval.datasets=[]",
                        "datasets.pool.label_key=null", "train.loader_workers=1", "train.steps=16",
                        "train.checkpoint_every=8", "train.keep_checkpoints=null"] for a in ("--set", o)]
    torchrun(*CLI, "pretrain", "--out", str(tmp_path / "whole"), *sets)
    cursors = json.loads((latest_checkpoint(tmp_path / "whole") / "meta.json").read_text())["stream_cursors"]
    assert cursors["layout"] == [2, 1] and max(c["epoch"] for c in cursors["cursors"].values()) >= 1
    shutil.copytree(tmp_path / "whole", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step_16")
    (tmp_path / "cut" / "checkpoints" / "latest").write_text("step_8\n")
    torchrun(*CLI, "pretrain", "--out", str(tmp_path / "cut"), "--resume")
    assert_same(load_file(str(latest_checkpoint(tmp_path / "whole") / "model.safetensors")),
                load_file(str(latest_checkpoint(tmp_path / "cut") / "model.safetensors")))
