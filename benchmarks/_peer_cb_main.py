"""`clip_benchmark` (CLIP_benchmark's console script) with a custom open_clip model config registered.

Run with the PEER environment's python (it imports clip_benchmark, which transferlab's environment lacks):

    .venv-peers/bin/python benchmarks/_peer_cb_main.py --openclip-config tiny.json [--cpu-linear-probe] \
        eval --model tiny --pretrained tiny.safetensors ...

- `--openclip-config FILE`: `open_clip.add_model_config(FILE)` in this process, so `--model <file stem>`
  names the very config file transferlab reads (`openclip:FILE:weights`). Everything after it goes to
  `clip_benchmark.cli.main()` unchanged, exactly as `clip_benchmark eval ...` would receive it.
- `--cpu-linear-probe`: CLIP_benchmark 1.6.2's linear probe cannot run without CUDA (`assert device ==
  'cuda'` and hard-coded `.cuda()` calls in clip_benchmark/metrics/linear_probe.py). This re-executes that
  module's own source with exactly two textual edits — the assertion dropped and `.cuda()` replaced by
  `.to(device)` — so the probe's computation (features, few-shot sampling, AdamW, schedule) is unchanged
  and runs on the CPU. `torch.nn.DataParallel` with no GPU just calls the wrapped module.
"""

from __future__ import annotations

import inspect
import sys


def patch_linear_probe_for_cpu() -> None:
    import clip_benchmark.metrics.linear_probe as linear_probe

    source = inspect.getsource(linear_probe)
    edits = {"assert device == 'cuda'": "pass  # CPU port: assertion removed", ".cuda()": ".to(device)"}
    for old in edits:
        if old not in source:
            raise SystemExit(f"clip_benchmark's linear_probe.py no longer contains {old!r}: update this patch")
    for old, new in edits.items():
        source = source.replace(old, new)
    exec(compile(source, linear_probe.__file__, "exec"), linear_probe.__dict__)  # noqa: S102 - peer's own code


def main() -> int:
    args = sys.argv[1:]
    while args[:1] in (["--openclip-config"], ["--cpu-linear-probe"]):
        if args[0] == "--openclip-config":
            import open_clip

            open_clip.add_model_config(args[1])
            args = args[2:]
        else:
            patch_linear_probe_for_cpu()
            args = args[1:]
    from clip_benchmark.cli import main as clip_benchmark_main

    sys.argv = ["clip_benchmark", *args]
    return clip_benchmark_main() or 0


if __name__ == "__main__":
    sys.exit(main())
