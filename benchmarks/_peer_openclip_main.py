"""open_clip's trainer (`python -m open_clip_train.main`) with a custom model config registered first.

    python benchmarks/_peer_openclip_main.py [--openclip-config tiny.json] [--peak-memory out.json] --model tiny ...

`--openclip-config FILE` calls `open_clip.add_model_config(FILE)` in this process, so `--model <file stem>`
names the very config file transferlab trains as `openclip:FILE`; `--peak-memory FILE` writes
{"peak_memory_gib": torch.cuda.max_memory_allocated() in GiB, or null without CUDA} after training; every other
argument goes to `open_clip_train.main.main()` unchanged.

One fix makes `--dataset-type webdataset` run with webdataset 1.0: its `tar_file_expander` yields an empty
dict at the end of each shard (an end-of-shard marker), which open_clip_train 3.3.0's `group_by_keys_nothrow`
reads as a file and fails on (KeyError: 'fname'). open_clip_train's module gets the same expander without the
markers (`eof_value=None`, webdataset's own option); the rest of its pipeline is unchanged.
"""

from __future__ import annotations

import json
import sys


def main() -> int:
    args = sys.argv[1:]
    peak_file = None
    while args[:1] in (["--openclip-config"], ["--peak-memory"]):
        if args[0] == "--openclip-config":
            import open_clip

            open_clip.add_model_config(args[1])
        else:
            peak_file = args[1]
        args = args[2:]
    import functools

    import open_clip_train.data
    import torch
    from open_clip_train.main import main as train_main
    from webdataset.tariterators import tar_file_expander

    open_clip_train.data.tar_file_expander = functools.partial(tar_file_expander, eof_value=None)

    train_main(args)
    if peak_file is not None:
        peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None
        with open(peak_file, "w") as out:
            json.dump({"peak_memory_gib": peak}, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
