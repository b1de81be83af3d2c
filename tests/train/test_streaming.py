"""Training on streamed webdataset shards: the same steps as in memory, exact resume, any number of processes and
loader workers, bad samples replaced and counted, crops drawn from the full-resolution image."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from transferlab.checkpoints import latest_checkpoint
from transferlab.config import WebDatasetSource, load_recipe
from transferlab.data.images import BadImage, decode_image
from transferlab.data.mixture import load_training_data
from transferlab.data.readers.bundled import load_bundled
from transferlab.data.readers.webdataset import read_webdataset, write_webdataset
from transferlab.data.stream.crops import CropDraws, _box
from transferlab.data.stream.loader import StepImages, stream_steps
from transferlab.data.stream.order import StepRows
from transferlab.data.tar.remote import RangeReader
from transferlab.errors import UserError
from transferlab.train import loop
from transferlab.train.data_report import STREAM_REPORT

STREAMED = ["datasets.pool.source=webdataset", "datasets.pool.label_key=cls",
            "datasets.pool.templates=['a digit {}.', 'the number {}.']", "train.data=pool", "eval.datasets=[pool]"]


def recipe(tiny_overrides, pool, *extra):
    return load_recipe(None, [*tiny_overrides, *STREAMED, f"datasets.pool.shards={pool}", *extra])


def weights(run_dir):
    return load_file(str(latest_checkpoint(run_dir) / "model.safetensors"))


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_streamed_training_takes_the_in_memory_steps_exactly(tiny_overrides, pool, tmp_path):
    """Centre-square decoding per step gives the pixels decoding up front gives, and the samples of a step are the
    same: so the weights are bit-identical, with the images decoded in 2 worker processes or in this one."""
    loop.pretrain(recipe(tiny_overrides, pool, "datasets.pool.stream=false"), tmp_path / "memory")
    loop.pretrain(recipe(tiny_overrides, pool, "datasets.pool.stream=true", "train.loader_workers=2"),
                  tmp_path / "workers")
    loop.pretrain(recipe(tiny_overrides, pool, "datasets.pool.stream=true", "train.loader_workers=0"),
                  tmp_path / "inline")
    memory = weights(tmp_path / "memory")
    assert_same(memory, weights(tmp_path / "workers"))
    assert_same(memory, weights(tmp_path / "inline"))
    logged = [json.loads(line) for line in (tmp_path / "workers" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= line["data_wait"] <= 1 and line["loader_images_per_s"] > 0 for line in logged)
    assert "data_wait" not in json.loads((tmp_path / "memory" / "metrics.jsonl").read_text().splitlines()[0])


def test_a_streamed_run_resumes_exactly_without_replaying_earlier_steps(tiny_overrides, pool, tmp_path, monkeypatch):
    streamed = recipe(tiny_overrides, pool, "datasets.pool.stream=true", "train.loader_workers=1",
                      "train.augment.crop_scale=[0.5, 1.0]", "train.augment.flip=true")
    loop.pretrain(streamed, tmp_path / "whole")
    real_lr_at, decoded = loop.lr_at, []

    def crash_at_step_6(step, *args):
        if step == 6:
            raise KeyboardInterrupt
        return real_lr_at(step, *args)

    monkeypatch.setattr(loop, "lr_at", crash_at_step_6)
    with pytest.raises(KeyboardInterrupt):
        loop.pretrain(streamed, tmp_path / "cut")
    monkeypatch.setattr(loop, "lr_at", real_lr_at)
    real_getitem = StepImages.__getitem__
    monkeypatch.setattr(StepImages, "__getitem__", lambda self, step: decoded.append(step) or real_getitem(self, step))
    streamed = streamed.model_copy(update={"train": streamed.train.model_copy(update={"loader_workers": 0})})
    loop.pretrain(streamed, tmp_path / "cut", resume=True)
    assert decoded == [4, 5, 6, 7]  # from the checkpoint of step 4 on: nothing before it is read again
    assert_same(weights(tmp_path / "whole"), weights(tmp_path / "cut"))


def test_each_process_and_worker_decodes_its_rows_of_the_one_process_batch(pool):
    data = read_webdataset(WebDatasetSource(source="webdataset", shards=str(pool), label_key="cls",
                                            templates=["{}"]), "pool", 28, 1, stream=True)
    order = StepRows(len(data), 12, seed=3)
    crops = CropDraws(3, (0.3, 1.0), (0.75, 4 / 3), True)

    def items(rows, workers):
        dataset = StepImages(data.images, order, rows, 28, 1, crops, 3, skip_bad=True)
        return list(stream_steps(dataset, 5, 9, workers, 2, False))

    whole = items(slice(0, 12), 0)
    parts = [items(slice(0, 4), 2), items(slice(4, 8), 1), items(slice(8, 12), 0)]
    for step, loaded in enumerate(whole):
        assert loaded.step == 5 + step
        assert torch.equal(loaded.index, order(5 + step))
        assert torch.equal(loaded.images, torch.cat([part[step].images for part in parts]))


def test_a_bad_image_mid_stream_is_replaced_deterministically_and_counted(tiny_overrides, tmp_path):
    data = load_bundled("mnist5k", "mnist5k", 28, 1, None).subset(torch.arange(200))
    shards = write_webdataset(data, tmp_path / "pool" / "s-%02d.tar", samples_per_shard=100)
    raw = bytearray(shards[1].read_bytes())  # damage the pixels of one PNG: its header still reads
    start = raw.index(b"IDAT") + 8
    raw[start:start + 40] = b"\x00" * 40
    shards[1].write_bytes(bytes(raw))
    skip = recipe(tiny_overrides, tmp_path / "pool", "datasets.pool.stream=true", "datasets.pool.bad_samples=skip",
                  "train.loader_workers=0", "train.steps=16", "train.checkpoint_every=8")
    loop.pretrain(skip, tmp_path / "a")
    loop.pretrain(skip, tmp_path / "b")
    report = json.loads((tmp_path / "a" / "data_report.json").read_text())
    train = load_training_data(skip).data.images  # the damaged sample: the first of shard 1, if in the train split
    in_shard_1 = np.flatnonzero(train.source == 1)
    damaged = int(in_shard_1[np.argmin(train.offset[in_shard_1])])
    order = StepRows(len(train), 32, seed=skip.seed)
    draws = sum(int((order(step) == damaged).sum()) for step in range(16))
    assert draws > 0 and report[STREAM_REPORT]["skipped"] == {"truncated image": draws}
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    error = recipe(tiny_overrides, tmp_path / "pool", "datasets.pool.stream=true", "train.loader_workers=1",
                   "train.steps=16")
    with pytest.raises(UserError, match=r"s-01.tar, sample '\d+': the image cannot be used.*bad_samples: skip"):
        loop.pretrain(error, tmp_path / "c")


def test_a_shard_changed_after_indexing_is_not_read_at_stale_offsets(pool, tmp_path):
    (tmp_path / "pool").mkdir()
    for shard in pool.glob("*.tar"):
        (tmp_path / "pool" / shard.name).write_bytes(shard.read_bytes())
    data = read_webdataset(WebDatasetSource(source="webdataset", shards=str(tmp_path / "pool"), label_key="cls",
                                            templates=["{}"]), "pool", 28, 1, stream=True)
    first = data.images.decode(0, 28, 1, RangeReader())
    changed = tmp_path / "pool" / "shard-00.tar"
    changed.write_bytes(changed.read_bytes() + b"\x00" * 512)
    fresh = data.images[torch.arange(len(data))]  # a new process's view: nothing checked yet
    with pytest.raises(BadImage, match="changed after it was indexed") as caught:
        fresh.decode(0, 28, 1, RangeReader())
    assert caught.value.reason == "changed shard" and first.shape == (1, 28, 28)
    assert torch.equal(fresh.decode(150, 28, 1, RangeReader()), data.images.decode(150, 28, 1, RangeReader()))


def test_compressed_shards_are_refused_for_streaming_with_the_fix(pool, tmp_path):
    import gzip

    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "a.tar").write_bytes(gzip.compress((pool / "shard-00.tar").read_bytes()))
    spec = WebDatasetSource(source="webdataset", shards=str(tmp_path / "gz"), label_key="cls", templates=["{}"])
    with pytest.raises(UserError, match="compressed.*gunzip.*stream: false"):
        read_webdataset(spec, "gz", 28, 1, stream=True)
    assert len(read_webdataset(spec, "gz", 28, 1, stream=False)) == 100


def test_a_mixture_streams_all_its_sources_or_says_so(tiny_overrides, pool):
    both = recipe(tiny_overrides, pool, "datasets.pool.stream=true", "datasets.copy.source=webdataset",
                  f"datasets.copy.shards={pool}/shard-0{{0..2}}.tar", "datasets.copy.label_key=cls",
                  "datasets.copy.templates=['{}']", "datasets.copy.stream=true", "train.data={pool: 0.5, copy: 0.5}")
    mixture = load_training_data(both)
    assert mixture.data.streamed and mixture.sizes == [420, 210]
    mixed = recipe(tiny_overrides, pool, "datasets.pool.stream=true", "train.data={pool: 0.5, mnist5k: 0.5}")
    with pytest.raises(UserError, match="streams all its sources or none"):
        load_training_data(mixed)


def test_crop_boxes_follow_torchvision_random_resized_crop_ranges():
    draws = CropDraws(0, (0.08, 1.0), (0.75, 4 / 3), False)
    for row in range(200):
        (left, top, right, bottom), mirror = draws.crop(7, row)(640, 360)
        width, height = right - left, bottom - top
        assert 0 <= left < right <= 640 and 0 <= top < bottom <= 360 and not mirror
        assert 0.08 * 640 * 360 * 0.9 <= width * height <= 640 * 360
        assert 0.7 <= width / height <= 1.4
    assert draws.crop(7, 3)(640, 360) == draws.crop(7, 3)(640, 360) != draws.crop(8, 3)(640, 360)
    import random

    assert _box(10, 1000, (0.9, 1.0), (0.75, 4 / 3), random.Random(0)) == (0, 493, 10, 13)  # torchvision's fallback


def test_a_crop_is_resampled_from_the_full_resolution_image(tmp_path):
    """The decoded crop equals PIL cropping the full-size image then resizing it (torchvision's resized_crop)."""
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 255, (300, 420, 3), dtype=np.uint8)).filter(
        __import__("PIL.ImageFilter", fromlist=["x"]).GaussianBlur(3))
    picture.save(tmp_path / "a.png")
    box = (40, 30, 240, 230)
    decoded = decode_image(tmp_path / "a.png", 64, 3, lambda w, h: (box, True))
    expected = np.asarray(picture.crop(box).resize((64, 64), Image.Resampling.BICUBIC))[:, ::-1]
    difference = np.abs(decoded.permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
    assert difference.mean() < 1.0 and decoded.shape == (3, 64, 64)


def test_a_pool_served_over_http_trains_to_the_weights_of_the_same_pool_on_disk(tiny_overrides, pool, served,
                                                                                   tmp_path):
    loop.pretrain(recipe(tiny_overrides, pool, "datasets.pool.stream=true", "train.loader_workers=0"),
                  tmp_path / "disk")
    remote = [f"datasets.pool.shards={served}/shard-{{00..05}}.tar"]
    loop.pretrain(load_recipe(None, [*tiny_overrides, *STREAMED, *remote, "train.loader_workers=1"]),
                  tmp_path / "http")
    assert_same(weights(tmp_path / "disk"), weights(tmp_path / "http"))


def test_an_unreachable_url_is_a_clear_error(tmp_path):
    spec = WebDatasetSource(source="webdataset", shards="http://127.0.0.1:9/shard-{0..1}.tar", bad_samples="error")
    with pytest.raises(UserError, match=r"127.0.0.1:9/shard-0.tar: the shard cannot be opened.*Check the path or URL"):
        read_webdataset(spec, "gone", 28, 1, stream=True)


def test_evaluating_on_a_streamed_dataset_gives_the_in_memory_results(tiny_overrides, pool, tmp_path):
    """The feature pass decodes a streamed split batch by batch; every metric equals the in-memory pass's."""
    from transferlab.evaluate.suite import evaluate, suite_of
    from transferlab.models.encoder import from_dual_encoder

    trained = recipe(tiny_overrides, pool, "datasets.pool.stream=false", "eval.tasks=[zeroshot_classification, "
                     "linear_probe, knn]", "eval.knn.ks=[1, 5]")
    model = loop.pretrain(trained, tmp_path / "run")
    results = {}
    for stream in (False, True):
        suite = suite_of(recipe(tiny_overrides, pool, f"datasets.pool.stream={str(stream).lower()}",
                                "eval.tasks=[zeroshot_classification, linear_probe, knn]", "eval.knn.ks=[1, 5]",
                                "eval.batch_size=64"))
        [results[stream]] = evaluate([(from_dual_encoder(model, "m", None), suite)], tmp_path / f"eval-{stream}")
    assert [t["metrics"] for t in results[True]["tasks"]] == [t["metrics"] for t in results[False]["tasks"]]
    assert results[True]["tasks"][1]["metrics"]["acc1"] > 0.5  # the linear probe: real features were compared


@pytest.mark.slow
def test_torchrun_two_processes_with_two_workers_each_on_three_uneven_shards(tiny_overrides, tmp_path):
    """2 ranks × 2 loader workers on shards of 150, 40 and 10 samples (fewer shards than workers in all, one tiny):
    the run finishes, and since every step's samples are the one-process run's, the final weights agree with
    it to float rounding (different samples would move them by ~1e-2)."""
    from tests.torchrun import CLI, torchrun

    data = load_bundled("mnist5k", "mnist5k", 28, 1, None).subset(torch.arange(200))
    (tmp_path / "pool").mkdir()
    for number, (start, stop) in enumerate([(0, 150), (150, 190), (190, 200)]):
        write_webdataset(data.subset(torch.arange(start, stop)), tmp_path / "pool" / f"s{number}-%d.tar",
                         samples_per_shard=200)
    sets = [a for o in [*tiny_overrides, *STREAMED, f"datasets.pool.shards={tmp_path / 'pool'}",
                        "datasets.pool.stream=true", "train.loader_workers=2"] for a in ("--set", o)]
    torchrun(*CLI, "pretrain", "--out", str(tmp_path / "two"), *sets)
    loop.pretrain(load_recipe(None, [sets[i + 1] for i in range(0, len(sets), 2)]), tmp_path / "one")
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert one.keys() == two.keys()
    for key in one:
        assert torch.allclose(one[key], two[key], atol=1e-5), key


def test_a_streamed_folder_source_trains_like_the_same_folder_in_memory(tiny_overrides, tmp_path):
    """Table (CSV) sources keep paths in memory and decode per step: the same weights as decoding up front."""
    from transferlab.data.images import encode_png

    data = load_bundled("mnist5k", "mnist5k", 28, 1, None).subset(torch.arange(300))
    (tmp_path / "images").mkdir()
    rows = ["image,caption,label"]
    for i in range(len(data)):
        (tmp_path / "images" / f"{i}.png").write_bytes(encode_png(data.images[i]))
        rows.append(f"{i}.png,{data.captions[i][0]},{data.classnames[int(data.labels[i])]}")
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    folder = ["datasets.digits2.source=folder", f"datasets.digits2.table={tmp_path / 'captions.csv'}",
              f"datasets.digits2.images={tmp_path / 'images'}",
              "datasets.digits2.label_column=label", "train.data=digits2", "eval.datasets=[digits2]"]
    for stream in ("false", "true"):
        loop.pretrain(load_recipe(None, [*tiny_overrides, *folder, f"datasets.digits2.stream={stream}",
                                         "train.loader_workers=1"]), tmp_path / stream)
    assert_same(weights(tmp_path / "false"), weights(tmp_path / "true"))


def test_a_streamed_pool_is_read_through_once_then_indexed_from_the_cache(pool, tmp_path, monkeypatch):
    from transferlab.data.stream import shard_scan

    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "pool").mkdir()
    for shard in pool.glob("*"):
        (tmp_path / "pool" / shard.name).write_bytes(shard.read_bytes())
    spec = WebDatasetSource(source="webdataset", shards=str(tmp_path / "pool"), label_key="cls", templates=["{}"])
    first = read_webdataset(spec, "pool", 28, 1, stream=True)
    log, real = tmp_path / "read.log", shard_scan._read  # shards are read in forked processes: they log to a file

    def logged(shard, scan):
        with open(log, "a") as file:
            file.write(Path(shard).name + "\n")
        return real(shard, scan)
    monkeypatch.setattr(shard_scan, "_read", logged)
    again = read_webdataset(spec, "pool", 28, 1, stream=True)
    assert not log.exists() and len(list((tmp_path / "cache" / "index" / "v2" / "shards").glob("*.npz"))) == 6
    assert list(again.captions) == list(first.captions) and torch.equal(again.labels, first.labels)
    assert again.images.fingerprint() == first.images.fingerprint()
    changed = tmp_path / "pool" / "shard-03.tar"
    changed.write_bytes(changed.read_bytes() + b"\0" * 1024)  # a new version: read again, the others not
    read_webdataset(spec, "pool", 28, 1, stream=True)
    assert log.read_text().split() == ["shard-03.tar"]


def test_a_hostile_pool_trains_to_the_end_and_every_skip_is_counted(tiny_overrides, tmp_path, monkeypatch):
    """About 5% of each kind of damage: samples without a label, undecodable and truncated images, a shard cut
    short, and, once training has begun, a shard rewritten (stale offsets) and one deleted (unreachable)."""
    import io
    import tarfile

    data = load_bundled("mnist5k", "mnist5k", 28, 1, None).subset(torch.arange(400))
    shards = write_webdataset(data, tmp_path / "pool" / "s-%02d.tar", samples_per_shard=20)  # 20 shards
    for number, shard in enumerate(shards[:6]):  # 1 of 20 samples each: label gone, image garbage, image cut
        with tarfile.open(shard) as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(shard, "w") as tar:
            for member, payload in members:
                key, ext = member.name.split(".")
                if int(key) % 20 == 3 and ext == "cls" and number < 2:
                    continue
                if int(key) % 20 == 3 and ext == "png" and number in (2, 3):
                    payload = b"\x89PNG not really"
                if int(key) % 20 == 3 and ext == "png" and number in (4, 5):
                    payload = payload[:len(payload) // 2]
                member.size = len(payload)
                tar.addfile(member, io.BytesIO(payload))
    shards[6].write_bytes(shards[6].read_bytes()[:9000])  # cut short: the samples after the cut are lost
    real_init = StepImages.__init__

    def then_damage(self, *args, **kwargs):  # the pool changes under a running job
        shards[7].write_bytes(shards[7].read_bytes() + b"\0" * 512)
        shards[8].unlink()
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(StepImages, "__init__", then_damage)
    hostile = recipe(tiny_overrides, tmp_path / "pool", "datasets.pool.stream=true", "datasets.pool.bad_samples=skip",
                     "train.loader_workers=0", "train.steps=24", "train.checkpoint_every=12")
    loop.pretrain(hostile, tmp_path / "run")
    report = json.loads((tmp_path / "run" / "data_report.json").read_text())
    indexed, streamed = report["pool"]["skipped"], report[STREAM_REPORT]["skipped"]
    assert indexed == {"missing label": 2, "corrupt shard": 1}
    assert set(streamed) == {"undecodable image", "truncated image", "changed shard", "unreachable shard"}
    assert streamed["changed shard"] > 5 and streamed["unreachable shard"] > 5
    assert latest_checkpoint(tmp_path / "run").name == "step_24"


def test_a_streamed_mixture_with_a_late_phase_trains_like_the_in_memory_mixture(tiny_overrides, pool, tmp_path):
    copy = ["datasets.copy.source=webdataset", f"datasets.copy.shards={pool}/shard-0{{0..2}}.tar",
            "datasets.copy.label_key=cls", "datasets.copy.templates=['{}']", "train.data={pool: 0.7, copy: 0.3}",
            "train.late_data={pool: 0.2, copy: 0.8}"]
    for stream in ("false", "true"):
        loop.pretrain(recipe(tiny_overrides, pool, *copy, f"datasets.pool.stream={stream}",
                             f"datasets.copy.stream={stream}", "train.loader_workers=1"), tmp_path / stream)
    assert_same(weights(tmp_path / "false"), weights(tmp_path / "true"))


def test_a_url_scheme_without_its_fsspec_backend_names_the_package_to_install():
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    spec = WebDatasetSource(source="webdataset", shards="s3://bucket/shard-{0..1}.tar")
    with pytest.raises(UserError, match="s3://bucket/.*s3fs"):
        read_webdataset(spec, "s3", 28, 1, stream=True)
