"""Streaming (docs/streaming.md): the pool index, the careful sample reader, which rows make a step, crops,
the step loader and whole-shard reading. Readers use this room; it uses none of them."""
