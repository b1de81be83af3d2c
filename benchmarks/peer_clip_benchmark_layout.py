"""Parity on CLIP_benchmark's own files: `transferlab eval` reading a dataset in CLIP_benchmark's webdataset
layout (`source: clip-benchmark`) against `clip_benchmark eval --dataset wds/<name>` on the same folders.

The data, model and peer environment are those of benchmarks/peer_clip_benchmark.py (mnist5k digits as PNG,
a small open_clip ViT trained here, clip-benchmark 1.6.2 in `.venv-peers`); here transferlab reads nothing
but the layout: `cls/` (classnames.txt, zeroshot_classification_templates.txt with {c}, train/ and test/
in two shards each) and `ret/` (dataset_type.txt = retrieval, one distinct caption per image). Zero-shot
acc1 / acc5 / mean per-class recall and retrieval recall@1/5/10 in both directions must agree to 1e-4, or
the script exits with status 1. One JSON line per metric, then a summary line.

    python benchmarks/peer_clip_benchmark_layout.py            # ~5 minutes on 2 CPU cores
    python benchmarks/peer_clip_benchmark_layout.py --steps 100
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import peer_clip_benchmark as peer
import torch
import yaml

TOLERANCE = 1e-4


def write_suite(work: Path, dirs: dict, args: argparse.Namespace) -> Path:
    suite = {"name": "clip-benchmark-layout",
             "datasets": {"cls": {"source": "clip-benchmark", "root": str(dirs["cls"])},
                          "ret": {"source": "clip-benchmark", "root": str(dirs["ret"])}},
             "eval": {"datasets": ["cls", "ret"], "split": "test", "batch_size": args.batch_size,
                      "dataset_tasks": {"cls": ["zeroshot_classification"], "ret": ["retrieval"]},
                      "retrieval": {"ks": peer.RECALL_KS}}}
    path = work / "suite.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peer-venv", type=Path, default=peer.ROOT / ".venv-peers")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    args.workers, args.shots, args.fewshot_seeds = 0, [], 1  # the peer's zero-shot and retrieval runs only
    torch.set_num_threads(args.threads)
    peer_python = peer.ensure_peer_venv(args.peer_venv.resolve(), False)
    work = Path(tempfile.mkdtemp(prefix="peer_cb_layout-"))
    try:
        files = peer.write_data(work)
        _, data, splits = peer.transferlab_view(files["table"])
        dirs = peer.write_clip_benchmark_data(work, files, data, splits, shards=2)
        model = peer.train_model(work, data, splits["train"], args.steps, 256, args.seed)
        ours, _ = peer.run_transferlab(work / "transferlab", model, write_suite(work, dirs, args), args.threads)
        theirs, _ = peer.run_clip_benchmark(work / "clip_benchmark", peer_python, model, dirs, args)
        return 0 if peer.report_parity(ours, theirs, TOLERANCE) else 1
    finally:
        if args.keep:
            peer.log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
