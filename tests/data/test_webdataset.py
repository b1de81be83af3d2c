"""webdataset shards: pattern expansion, the write/read round trip, compatibility with the webdataset
library both ways, unsafe and corrupt tars, bad samples, and the module's old path."""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest
import torch
import webdataset as wds
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.data.tars import write_tar
from transferlab.config import WebDatasetSource
from transferlab.data.dataset import ImageTextData
from transferlab.data.images import encode_png
from transferlab.data.readers.webdataset import read_webdataset, write_webdataset
from transferlab.data.stream.shard_samples import iter_samples
from transferlab.data.tar.paths import expand_shards, expand_sources
from transferlab.errors import UserError


def collection(n=5, channels=3, size=8, labelled=True, seed=0) -> ImageTextData:
    images = torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    captions = [[f"picture {i}", f"also {i} ✓"] for i in range(n)]
    labels = torch.arange(n) % 3 if labelled else None
    return ImageTextData("toy", images, captions, labels, ["cat", "dog", "eel"] if labelled else None)


def read(shards, size=8, channels=3, **options) -> ImageTextData:
    return read_webdataset(WebDatasetSource(source="webdataset", shards=str(shards), **options), "web", size, channels)


PNG = encode_png(torch.full((3, 8, 8), 7, dtype=torch.uint8))


def test_expand_shards_accepts_files_folders_globs_and_braces(tmp_path):
    for name in ("b.tar", "a.tar", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    assert expand_shards(str(a)) == [a]
    assert expand_shards(str(tmp_path)) == [a, b]
    assert expand_shards(str(tmp_path / "*.tar")) == [a, b]
    assert expand_shards(str(tmp_path / "{a,b}.tar")) == [a, b]
    with pytest.raises(UserError, match=r"No shards match '.*nothing-\*\.tar'"):
        expand_shards(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(UserError, match=r"1 of the files it names do not exist \(.*c\.tar\)"):
        expand_shards(str(tmp_path / "{a,b,c}.tar"))


def test_round_trip_keeps_images_captions_and_labels(tmp_path):
    data = collection()
    paths = write_webdataset(data, tmp_path / "out" / "shard-%06d.tar", samples_per_shard=2)
    assert [p.name for p in paths] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert (tmp_path / "out" / "classnames.txt").read_text() == "cat\ndog\neel\n"
    back = read(tmp_path / "out" / "shard-{000000..000002}.tar", label_key="cls")
    assert torch.equal(back.images, data.images)
    assert back.captions == data.captions
    assert torch.equal(back.labels, data.labels) and back.classnames == data.classnames
    assert back.report.kept == 5 and not back.report.skipped


def test_round_trip_of_grey_unlabelled_data_and_pattern_without_placeholder(tmp_path):
    data = collection(n=3, channels=1, labelled=False)
    paths = write_webdataset(data, tmp_path / "train.tar")
    assert paths == [tmp_path / "train-000000.tar"] and not (tmp_path / "classnames.txt").exists()
    back = read(paths[0], channels=1)
    assert torch.equal(back.images, data.images) and back.labels is None
    (tmp_path / "dir").mkdir()
    assert write_webdataset(data, tmp_path / "dir") == [tmp_path / "dir" / "shard-000000.tar"]
    with pytest.raises(UserError, match="one %-placeholder"):
        write_webdataset(data, tmp_path / "x-%%.tar")


def test_existing_shards_are_never_overwritten(tmp_path):
    data = collection()
    [path] = write_webdataset(data, tmp_path / "s-%03d.tar")
    before = path.read_bytes()
    with pytest.raises(UserError, match=r"s-000\.tar already exists.*another output path, or delete"):
        write_webdataset(collection(seed=1), tmp_path / "s-%03d.tar")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classnames.txt", "s-000.tar"]


def test_webdataset_library_reads_our_shards(tmp_path):
    data = collection()
    paths = write_webdataset(data, tmp_path / "s-%06d.tar", samples_per_shard=3)
    samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False))
    assert [s["__key__"] for s in samples] == [f"{i:06d}" for i in range(5)]
    for i, sample in enumerate(samples):
        assert sample["png"] == encode_png(data.images[i])
        assert sample["txt"] == data.captions[i][0].encode()
        assert json.loads(sample["json"]) == {"captions": data.captions[i]}
        assert sample["cls"] == str(int(data.labels[i])).encode()


def test_we_read_shards_of_the_webdataset_tarwriter(tmp_path):
    data = collection(n=4, labelled=False)
    with wds.TarWriter(str(tmp_path / "w.tar")) as sink:
        for i in range(4):
            sink.write({"__key__": f"sample{i}", "png": encode_png(data.images[i]), "txt": f"caption {i}",
                        "cls": [4, 2, 4, 9][i]})
    back = read(tmp_path / "w.tar", label_key="cls")
    assert torch.equal(back.images, data.images)
    assert back.captions == [[f"caption {i}"] for i in range(4)]
    assert back.classnames == ["2", "4", "9"] and back.labels.tolist() == [1, 0, 1, 2]


def test_iter_samples_streams_dicts_grouped_by_key(tmp_path):
    path = write_tar(tmp_path / "t.tar", [("a.png", PNG), ("a.txt", b"x"), ("dir/b.seg.png", PNG), ("dir/b.txt", b"y")])
    stream = iter_samples([path])
    first = next(stream)
    assert first == {"__key__": "a", "__shard__": str(path), "png": PNG, "txt": b"x"}
    assert next(stream) == {"__key__": "dir/b", "__shard__": str(path), "seg.png": PNG, "txt": b"y"}
    assert next(stream, None) is None


def test_unsafe_members_are_skipped_and_nothing_is_written(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    path = shards / "evil.tar"
    with tarfile.open(path, "w") as tar:
        for name, payload in [("../evil.txt", b"gotcha"), ("/abs.png", PNG), ("ok.png", PNG), ("ok.txt", b"fine")]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        links = [("link.png", tarfile.SYMTYPE, "/etc/passwd"), ("hard.txt", tarfile.LNKTYPE, "ok.txt"),
                 ("dev.png", tarfile.CHRTYPE, "")]
        for name, kind, target in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    cache = Path(os.environ["TRANSFERLAB_CACHE"])

    def written() -> list[Path]:  # everywhere around the test's folder, but the index cache (which is for writing)
        return sorted(p for p in tmp_path.parent.rglob("*") if cache not in (p, *p.parents))
    before = written()
    data = read(path, bad_samples="error")
    assert data.captions == [["fine"]] and data.report.skipped == {"unsafe tar member": 5}
    assert written() == before


def test_corrupt_and_truncated_shards(tmp_path):
    [path] = write_webdataset(collection(n=6, size=32), tmp_path / "s-%d.tar")
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 6 // 10])
    with pytest.raises(UserError, match=r"s-0\.tar: the shard is corrupt or truncated.*Re-create"):
        read(path, size=32)
    data = read(path, size=32, bad_samples="skip", label_key="cls")
    assert 1 <= data.report.kept < 6 and data.report.skipped == {"corrupt shard": 1}
    (tmp_path / "junk.tar").write_bytes(b"this is no tar file" * 100)
    with pytest.raises(UserError, match=r"junk\.tar: the shard is corrupt"):
        read(tmp_path / "junk.tar")


def test_bad_samples_stop_or_are_skipped(tmp_path):
    path = write_tar(tmp_path / "t.tar", [("a.png", PNG), ("a.txt", b"good"), ("b.txt", b"no image"),
                                       ("c.png", b"broken"), ("c.txt", b"x"), ("d.png", PNG), ("e.png", PNG),
                                       ("e.txt", b"  "), ("f.png", PNG), ("f.txt", b"\xff")])
    with pytest.raises(UserError, match=r"t\.tar, sample 'b': no image member.*datasets\.web\.bad_samples: skip"):
        read(path)
    data = read(path, bad_samples="skip")
    assert data.captions == [["good"]]
    assert data.report.skipped == {"no image": 1, "undecodable image": 1, "missing caption": 1,
                                   "empty caption": 1, "invalid caption": 1}


def test_json_captions_templates_and_classnames_file(tmp_path):
    (tmp_path / "classnames.txt").write_text("cat\ndog\n")
    path = write_tar(tmp_path / "t.tar", [
        ("a.png", PNG), ("a.txt", b"short"), ("a.json", json.dumps({"captions": ["one", "two"]}).encode()),
        ("a.cls", b"1"), ("b.png", PNG), ("b.cls", b"cat"), ("c.png", PNG), ("c.cls", b"5")])
    data = read(path, label_key="cls", templates=["a {}"], bad_samples="skip")
    assert data.captions == [["one", "two"], ["a cat"]]
    assert data.classnames == ["cat", "dog"] and data.labels.tolist() == [1, 0]
    assert data.report.skipped == {"unknown label": 1}
    with pytest.raises(UserError, match=r"sample 'c': the label '5' is neither a class index 0\.\.1 nor"):
        read(path, label_key="cls", templates=["a {}"])


captions = st.lists(st.text(st.characters(codec="utf-8"), max_size=20), min_size=1, max_size=3)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(captions, min_size=1, max_size=4))
def test_any_captions_survive_the_round_trip(texts):
    data = ImageTextData("p", torch.zeros(len(texts), 1, 4, 4, dtype=torch.uint8), texts)
    expected = [[c.strip() for c in caps if c.strip()] for caps in texts]
    with tempfile.TemporaryDirectory() as folder:
        write_webdataset(data, Path(folder) / "s-%d.tar", samples_per_shard=3)
        if not any(expected):
            with pytest.raises(UserError, match="no usable samples"):
                read(folder, size=4, channels=1, bad_samples="skip")
            return
        back = read(folder, size=4, channels=1, bad_samples="skip")
    assert back.captions == [caps for caps in expected if caps]
    assert back.report.skipped.get("empty caption", 0) == expected.count([])


def test_the_old_module_path_imports_for_one_more_release_and_names_the_new_one():
    """`transferlab.data.shards` was documented (README, docs/recipes.md) before data/ was split into rooms."""
    sys.modules.pop("transferlab.data.shards", None)
    with pytest.warns(DeprecationWarning, match="transferlab.data.readers.webdataset"):
        old = importlib.import_module("transferlab.data.shards")
    assert (old.read_webdataset, old.write_webdataset, old.expand_sources) == \
        (read_webdataset, write_webdataset, expand_sources)
