"""Peak memory of one contrastive step: gradient caching at a large batch against a plain step.

Each case runs in a fresh process (so peaks do not mix) and reports the growth of the process's peak
resident memory during one training step of the default model's image tower with a trainable byte-level
text tower: a plain step at the chunk size, a gradient-cached step at the large batch embedded one chunk
at a time, and, for scale, a plain step at the large batch. Prints one JSON line per case and the ratio
cached / plain-at-chunk (the acceptance bar is 1.5).

    python benchmarks/grad_cache_memory.py --batch 4096 --chunk 256
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def step(batch: int, chunk: int | None) -> dict:
    import torch

    from transferlab.config import ModelSpec, TowerSpec
    from transferlab.losses import clip_loss
    from transferlab.models.dual_encoder import DualEncoder
    from transferlab.train.large_batch import backward_step

    torch.manual_seed(0)
    model = DualEncoder(ModelSpec(image=TowerSpec(name="cnn-small"), text=TowerSpec(name="text-transformer-tiny")))
    images = torch.randn(batch, 1, 28, 28)
    tokens = model.text_tower.tokenize([f"a handwritten digit {i % 10}" for i in range(batch)])
    encoders = [(lambda a, b: model.encode_image(images[a:b]), batch),
                (lambda a, b: model.project_text(model.text_tower({k: v[a:b] for k, v in tokens.items()})), batch)]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    backward_step(encoders, lambda e, p: clip_loss(*e, model.logit_scale.exp()), model, chunk, "cache")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"batch": batch, "chunk": chunk, "peak_growth_mb": round((peak - before) / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--case", nargs=2, type=int, help=argparse.SUPPRESS)  # batch, chunk (0: none), in a child
    args = parser.parse_args()
    if args.case:
        print(json.dumps(step(args.case[0], args.case[1] or None)))
        return
    rows = {}
    for name, batch, chunk in [("plain_at_chunk", args.chunk, 0), ("cached", args.batch, args.chunk),
                               ("plain_at_batch", args.batch, 0)]:
        out = subprocess.run([sys.executable, __file__, "--case", str(batch), str(chunk)], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        rows[name] = {"benchmark": "grad_cache_memory", "case": name, **json.loads(out)}
        print(json.dumps(rows[name]), flush=True)
    ratio = rows["cached"]["peak_growth_mb"] / rows["plain_at_chunk"]["peak_growth_mb"]
    print(json.dumps({"benchmark": "grad_cache_memory", "cached_over_plain_at_chunk": round(ratio, 2),
                      "plain_at_batch_over_cached": round(rows["plain_at_batch"]["peak_growth_mb"]
                                                          / rows["cached"]["peak_growth_mb"], 2)}))


if __name__ == "__main__":
    main()
