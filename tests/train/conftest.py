"""Fixtures of the streaming tests: a pool of real digits as shards, and that pool served over HTTP."""

import pytest
import torch

from transferlab.data.readers.bundled import load_bundled
from transferlab.data.readers.webdataset import write_webdataset


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """600 real MNIST digits as six PNG shards, the way `transferlab curate` and img2dataset write them."""
    folder = tmp_path_factory.mktemp("pool")
    data = load_bundled("mnist5k", "mnist5k", 28, 1, None)
    write_webdataset(data.subset(torch.arange(600)), folder / "shard-%02d.tar", samples_per_shard=100)
    return folder


@pytest.fixture
def serve_without_ranges():
    """A function serving a folder with `python -m http.server` on 127.0.0.1 (it answers no range requests), in a
    process stopped after the test; returns its URL."""
    import subprocess
    import sys

    servers = []

    def serve(folder) -> str:
        server = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                                   "--directory", str(folder)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        servers.append(server)
        port = server.stdout.readline().split("port ")[1].split()[0]  # "Serving HTTP on ... port N ...": listening
        return f"http://127.0.0.1:{port}"
    yield serve
    for server in servers:
        server.terminate()
        server.wait()


@pytest.fixture
def served(pool, serve_without_ranges):
    """The pool served over HTTP by `python -m http.server`; its URL."""
    return serve_without_ranges(pool)


class RangeHandler:
    """The request handler of a server that answers range requests (`Range: bytes=a-b` -> 206), as object
    stores and most web servers do; `python -m http.server` does not."""

    @staticmethod
    def make():
        import http.server
        import io
        import os
        import re

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def send_head(self):
                wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if wanted is None:
                    return super().send_head()
                with open(self.translate_path(self.path), "rb") as file:
                    size = os.fstat(file.fileno()).st_size
                    start, end = int(wanted[1]), min(int(wanted[2] or size - 1), size - 1)
                    file.seek(start)
                    body = file.read(max(0, end - start + 1))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                return io.BytesIO(body)
        return Handler


@pytest.fixture
def serve_with_ranges():
    """A function serving a folder from a thread of this process with range requests answered; yields its URL."""
    import functools
    import http.server
    import threading

    servers = []

    def serve(folder) -> str:
        handler = functools.partial(RangeHandler.make(), directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"
    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()
