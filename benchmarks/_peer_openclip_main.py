"""open_clip's trainer (`python -m open_clip_train.main`) with a custom model config registered first.

    python benchmarks/_peer_openclip_main.py --openclip-config tiny.json --model tiny ...trainer arguments...

`--openclip-config FILE` calls `open_clip.add_model_config(FILE)` in this process, so `--model <file stem>`
names the very config file transferlab trains as `openclip:FILE`; every other argument goes to
`open_clip_train.main.main()` unchanged.
"""

from __future__ import annotations

import sys


def main() -> int:
    args = sys.argv[1:]
    if args[:1] == ["--openclip-config"]:
        import open_clip

        open_clip.add_model_config(args[1])
        args = args[2:]
    from open_clip_train.main import main as train_main

    train_main(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
