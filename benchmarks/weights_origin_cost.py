"""What recording a weights file's origin costs: `openclip:<arch>:<file>` (which reads the file and records its
SHA-256 in results.json's provenance.weights) against open_clip loading the same file itself
(`create_model_and_transforms(arch, pretrained=file)`), alternated in one process, plus the hash alone.

    python benchmarks/weights_origin_cost.py --arch ViT-B-32 --rounds 5

Prints one JSON line per round: seconds of each and the ratios transferlab / open_clip and hash / transferlab.
The weights are a seeded random initialisation saved as safetensors in a temporary directory (removed after);
the file stays in the page cache between rounds, as a file loaded twice in a row does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

from transferlab.fileio import sha256_file
from transferlab.models.openclip import quiet
from transferlab.models.references import load_model


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="ViT-B-32")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "weights.safetensors"
        torch.manual_seed(0)
        with quiet():
            state = open_clip.create_model(args.arch).state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        del state

        def peer():
            with quiet():
                open_clip.create_model_and_transforms(args.arch, pretrained=str(path))

        def ours():
            load_model(f"openclip:{args.arch}:{path}", torch.device("cpu"))

        peer()  # first reads: imports, page cache
        for round_ in range(args.rounds):
            first, second = (peer, ours) if round_ % 2 == 0 else (ours, peer)
            seconds = {first.__name__: timed(first), second.__name__: timed(second)}
            digest = timed(lambda: sha256_file(path))
            print(json.dumps({"arch": args.arch, "megabytes": round(path.stat().st_size / 2**20), "round": round_,
                              "open_clip_s": round(seconds["peer"], 3), "transferlab_s": round(seconds["ours"], 3),
                              "sha256_s": round(digest, 3), "transferlab_over_open_clip":
                              round(seconds["ours"] / seconds["peer"], 3),
                              "sha256_over_transferlab": round(digest / seconds["ours"], 3)}), flush=True)


if __name__ == "__main__":
    main()
