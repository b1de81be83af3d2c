"""Dataset fingerprints read each file once: the digest cache in $TRANSFERLAB_CACHE/fingerprints/ is reused while
a file's size, mtime, ctime and inode stay, and a file rewritten at the same size is read again."""

import os

import pytest

from transferlab.config.schema import ImageFolderSource
from transferlab.data import fingerprint


@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            (root / c / f"{i}.png").write_bytes(bytes([i]) * 100 + c.encode())
    return root


@pytest.fixture
def reads(monkeypatch):
    """The files whose content the fingerprint reads."""
    seen = []
    original = fingerprint._content_digest

    def counting(path, size):
        seen.append(path.name)
        return original(path, size)
    monkeypatch.setattr(fingerprint, "_content_digest", counting)
    return seen


def test_a_repeated_fingerprint_reads_no_file_again(tree, reads):
    spec = ImageFolderSource(source="imagefolder", root=str(tree))
    first = fingerprint.dataset_fingerprint(spec)
    assert len(reads) == 6
    assert fingerprint.dataset_fingerprint(spec) == first and len(reads) == 6  # all six from the cache
    (tree / "cat" / "x.lock").write_bytes(b"")  # a library's lock file is not data
    assert fingerprint.dataset_fingerprint(spec) == first
    (tree / "cat" / "3.png").write_bytes(b"new")
    assert fingerprint.dataset_fingerprint(spec) != first and reads[6:] == ["3.png"]


def test_content_changed_at_the_same_size_gives_a_new_fingerprint(tree, reads):
    spec = ImageFolderSource(source="imagefolder", root=str(tree))
    image = tree / "dog" / "1.png"
    before = fingerprint.dataset_fingerprint(spec)
    old = os.stat(image)
    image.write_bytes(b"\x07" * old.st_size)  # same size, other bytes
    os.utime(image, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))  # a new mtime
    changed = fingerprint.dataset_fingerprint(spec)
    assert changed != before and reads[-1] == "1.png"
    image.write_bytes(b"\x08" * old.st_size)
    os.utime(image, ns=(old.st_atime_ns, old.st_mtime_ns + 10**9))  # even the same mtime: ctime moved on
    assert fingerprint.dataset_fingerprint(spec) not in (before, changed)
    image.write_bytes(b"\x07" * old.st_size)
    assert fingerprint.dataset_fingerprint(spec) == changed  # content, not history, decides


def test_an_unwritable_cache_still_fingerprints(tree, tmp_path, monkeypatch, reads):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("TRANSFERLAB_CACHE", str(tmp_path / "a-file"))
    spec = ImageFolderSource(source="imagefolder", root=str(tree))
    assert fingerprint.dataset_fingerprint(spec) == fingerprint.dataset_fingerprint(spec) and len(reads) == 12
