"""Moved: `transferlab.data.readers.webdataset` reads and writes shards, `transferlab.data.tar.paths` expands
a shard pattern. This path, documented before data/ was split into rooms, still imports for one release, with
a DeprecationWarning; it goes in transferlab 0.2."""

import warnings

from transferlab.data.readers.webdataset import read_webdataset, write_webdataset
from transferlab.data.tar.paths import expand_sources

__all__ = ["expand_sources", "read_webdataset", "write_webdataset"]

warnings.warn("transferlab.data.shards moved to transferlab.data.readers.webdataset (expand_sources: "
              "transferlab.data.tar.paths); the old path goes in transferlab 0.2", DeprecationWarning, stacklevel=2)
