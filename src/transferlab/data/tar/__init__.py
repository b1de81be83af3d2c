"""Shard files read without torch: tar headers in place, the C tar kernels and their twins, shard patterns and
URLs, published counts and a dataset's own files. Curation's worker processes read shards through this room;
an import-linter contract (pyproject.toml) holds it, and them, to no torch."""
