"""Fixtures of the streaming tests: a pool of real digits as shards, and that pool served over HTTP."""

import pytest
import torch

from transferlab.data.bundled import load_bundled
from transferlab.data.shards import write_webdataset


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """600 real MNIST digits as six PNG shards, the way `transferlab curate` and img2dataset write them."""
    folder = tmp_path_factory.mktemp("pool")
    data = load_bundled("mnist5k", "mnist5k", 28, 1, None)
    write_webdataset(data.subset(torch.arange(600)), folder / "shard-%02d.tar", samples_per_shard=100)
    return folder


@pytest.fixture
def served(pool):
    """The pool served over HTTP by `python -m http.server` on 127.0.0.1 (started and stopped here)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory",
                               str(pool)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/classnames.txt", timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait()
