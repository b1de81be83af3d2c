"""Resume is exact for every kind of training state, not only the stateless CLIP recipe.

Each case trains 8 steps uninterrupted, then again with a crash at step 6 and a resume from the checkpoint of
step 4, at which the case's state has already moved away from its initial value (checked on that checkpoint:
the EMA differs from the live weights, LOOK's bank is full and has wrapped, the 8-bit moments are quantised, ...).
The resumed run must end with the uninterrupted run's final model.safetensors and train_state.safetensors bit for
bit, the same meta.json (grad scaler, skipped steps, RNG, optimizer groups) and the same logged metrics. A resume
that forgot any one piece of state (the EMA, LOOK's bank, the optimizer's moments, the RNG, the grad scaler, the
count of skipped steps) fails at least one test here. A streamed run with dropout checks that starting the loader
draws nothing from the global RNG the resume restored (it did once: dropout masks then differed after a resume).
"""

import contextlib
import json
from types import SimpleNamespace

import pytest
import sklearn.datasets  # noqa: F401  its first import draws from Python's global RNG; see assert_identical_runs
import torch
from safetensors.torch import load_file

from tests.conftest import TINY
from transferlab.checkpoints import META_FILE, MODEL_FILE, STATE_FILE, latest_checkpoint
from transferlab.config import load_recipe
from transferlab.fileio import read_jsonl_log
from transferlab.train import loop

CRASH = 6  # the step the cut run dies in; TINY checkpoints every 4 of 8 steps, so it resumes from step 4
# sklearn's digits (1,078 training images, loaded in milliseconds) rather than mnist5k (seconds per run); "scans" is a
# second collection of them (another split seed) for mixtures
DIGITS = ["train.data=digits", "datasets.scans.source=digits",
          "datasets.scans.splits={train: 0.7, val: 0.1, test: 0.2, seed: 1}"]
TIMING = ("samples_per_s", "data_wait", "loader_images_per_s")  # metrics that measure the machine, not the run
STREAMED = ["datasets.pool.source=webdataset", "datasets.pool.label_key=cls",
            "datasets.pool.templates=['a digit {}.', 'the number {}.']", "datasets.pool.stream=true",
            "train.data=pool", "eval.datasets=[pool]", "train.loader_workers=0"]


class Preempted(Exception):
    pass


# ------------------------------------------------------------------------------------ the states, in recipes


def image_text(*extra, recipe=None):
    return load_recipe(recipe, [*TINY, *DIGITS, *extra])


def look(*extra):
    """The built-in `look` recipe on the tiny image tower (it has no text tower), with a bank of 96 embeddings:
    three 32-row batches overfill it, so by step 4 the FIFO has wrapped and its pointer is not at 0."""
    tiny = [o for o in TINY if not o.startswith("model.text")]
    return load_recipe("look", [*tiny, *DIGITS, "train.look.bank_size=96", *extra])


def mixture(*extra):
    """The built-in `mixture` recipe's weights (0.8 : 0.2, then 0.3 : 0.7) over two digit collections: with
    late_fraction 0.25 the late weights take over at step 6, after the checkpoint the run resumes from."""
    return image_text("train.data={digits: 0.8, scans: 0.2}", "train.late_data={digits: 0.3, scans: 0.7}",
                      "train.late_fraction=0.25", *extra, recipe="mixture")


def streamed_mixture(pool):
    """Two streamed webdataset sources mixed, reweighed for the last quarter of the steps."""
    return [f"datasets.copy.shards={pool}/shard-0{{0..2}}.tar", "datasets.copy.source=webdataset",
            "datasets.copy.label_key=cls", "datasets.copy.templates=['{}']", "datasets.copy.stream=true",
            "train.data={pool: 0.7, copy: 0.3}", "train.late_data={pool: 0.2, copy: 0.8}", "train.late_fraction=0.25"]


# Each check gets the cut run: `meta` and `state` of the checkpoint it resumed from (step 4), `final` (its final
# train state) and `metrics` (its metrics.jsonl), and asserts that the case's state had moved before the resume.


def ema_moved(run):
    """The average has taken 4 updates and is no longer the training weights."""
    state = run.state
    assert int(state["ema.updates"]) == 4
    shared = [k[5:] for k in state if k.startswith("live.") and f"ema.shadow.{k[5:]}" in state]
    assert shared and any(not torch.equal(state[f"live.{k}"], state[f"ema.shadow.{k}"]) for k in shared)


def bank_wrapped(run):
    """The bank is full, has wrapped round (4 × 32 rows into 96 slots) and holds real (unit-norm) embeddings."""
    state = run.state
    assert int(state["objective.look.count"]) == 96 and int(state["objective.look.pointer"]) == 128 % 96
    assert state["objective.look.bank_embeddings"].norm(dim=1).gt(0.99).all()


def moments_quantised(run):
    """Moments are stored as 8-bit codes with non-zero block scales after 4 optimizer steps."""
    codes = [k for k in run.state if k.endswith("exp_avg_codes")]
    assert codes and all(run.state[k].dtype == torch.uint8 for k in codes)
    assert all(run.state[k.replace("codes", "absmax")].gt(0).any() for k in codes)
    assert {float(run.state[k]) for k in run.state if k.endswith(".step")} == {4.0}


def rng_drawn(run):
    """The steps draw dropout masks from the global torch RNG: its saved state moved between steps 4 and 8."""
    assert not torch.equal(run.state["rng.torch"], run.final["rng.torch"])


def late_mix(source):
    def check(run):
        """The late weights took over after the checkpoint: `source`'s share of the rows rose from step 4 to 8."""
        shares = {m["step"]: m[f"mix/{source}"] for m in run.metrics}
        assert shares[4] < 0.5 < shares[8]
    return check


DROPOUT = "model.text.options={dropout: 0.2}"  # the text tower draws dropout masks from the global RNG
CASES = [  # id, recipe(pool) and the check that the state at the checkpoint of step 4 has diverged
    pytest.param(lambda pool: image_text("train.ema_decay=0.9"), ema_moved, id="ema"),
    pytest.param(lambda pool: look(), bank_wrapped, id="look-bank"),
    pytest.param(lambda pool: look("train.ema_decay=0.9"), bank_wrapped, id="look-bank+ema"),
    pytest.param(lambda pool: image_text(recipe="adamw8bit"), moments_quantised, id="adamw8bit"),
    pytest.param(lambda pool: image_text(recipe="lion8bit"), moments_quantised, id="lion8bit"),
    pytest.param(lambda pool: mixture(), late_mix("scans"), id="mixture-late-data"),
    pytest.param(lambda pool: image_text("train.chunk_size=8", "train.large_batch=cache", DROPOUT), rng_drawn,
                 id="gradient-cache+dropout"),
    pytest.param(lambda pool: image_text("train.chunk_size=8", "train.large_batch=accumulate", DROPOUT),
                 rng_drawn, id="accumulate+dropout"),
    pytest.param(lambda pool: image_text(*STREAMED, f"datasets.pool.shards={pool}", "train.ema_decay=0.9"),
                 ema_moved, id="streamed-ema"),
    pytest.param(lambda pool: look(*STREAMED, f"datasets.pool.shards={pool}"), bank_wrapped, id="streamed-look-bank"),
    pytest.param(lambda pool: image_text(*STREAMED, f"datasets.pool.shards={pool}", recipe="adamw8bit"),
                 moments_quantised, id="streamed-adamw8bit"),
    pytest.param(lambda pool: image_text(*STREAMED, f"datasets.pool.shards={pool}", *streamed_mixture(pool)),
                 late_mix("copy"), id="streamed-mixture-late-data"),
    pytest.param(lambda pool: image_text(*STREAMED, f"datasets.pool.shards={pool}", DROPOUT), rng_drawn,
                 id="streamed-dropout"),
]


# ------------------------------------------------------------------------------------------------- helpers


def crash_then_resume(recipe, run_dir, monkeypatch, crash_at=CRASH):
    """Train `recipe` into `run_dir` until it dies at step `crash_at`, then resume it to the end."""
    real_lr_at = loop.lr_at

    def crashing(step, *args):
        if step == crash_at:
            raise Preempted
        return real_lr_at(step, *args)

    with monkeypatch.context() as patched:
        patched.setattr(loop, "lr_at", crashing)
        with pytest.raises(Preempted):
            loop.pretrain(recipe, run_dir)
    resumed_from = latest_checkpoint(run_dir)
    loop.pretrain(recipe, run_dir, resume=True)
    return resumed_from


def checkpoint(path):
    meta = json.loads((path / META_FILE).read_text())
    return meta, load_file(str(path / MODEL_FILE)), load_file(str(path / STATE_FILE))


def assert_identical_runs(whole_dir, cut_dir):
    """Final weights, train state and meta.json bit for bit, and the same metrics but the timings."""
    (whole_meta, whole_model, whole_state), (cut_meta, cut_model, cut_state) = (
        checkpoint(latest_checkpoint(d)) for d in (whole_dir, cut_dir))
    assert latest_checkpoint(cut_dir).name == latest_checkpoint(whole_dir).name
    for whole, cut in ((whole_model, cut_model), (whole_state, cut_state)):
        assert whole.keys() == cut.keys()
        different = [key for key in whole if not torch.equal(whole[key], cut[key])]
        assert not different, f"differ after resume: {different[:8]}"
    # Python's global RNG is drawn from by no training step, only by one-time imports (sklearn's, on loading digits),
    # so in one test process its state depends on which run imported first: sklearn is imported above to keep it equal
    whole_meta.pop("sha256"), cut_meta.pop("sha256")
    assert whole_meta == cut_meta
    untimed = [[{k: v for k, v in line.items() if k not in TIMING} for line in read_jsonl_log(d / "metrics.jsonl")]
               for d in (whole_dir, cut_dir)]
    assert untimed[0] == untimed[1]


# --------------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("make", "diverged"), CASES)
def test_a_crashed_run_resumed_from_step_4_ends_bit_identical_to_the_uninterrupted_run(
        make, diverged, request, tmp_path, monkeypatch):
    """For each kind of state (EMA, LOOK's memory bank, 8-bit moments, a mixture's late weights, gradient caching
    and accumulation with dropout, streamed or in memory): the state at the checkpoint resumed from has diverged
    from its initial value, and the resumed run ends exactly where the uninterrupted run does."""
    case = request.node.callspec.id
    streamed = case.startswith("streamed")
    recipe = make(request.getfixturevalue("pool") if streamed else None)
    loop.pretrain(recipe, tmp_path / "whole")
    resumed_from = crash_then_resume(recipe, tmp_path / "cut", monkeypatch)
    assert resumed_from.name == "step_4"
    meta, _, state = checkpoint(resumed_from)
    cut = tmp_path / "cut"
    final, metrics = checkpoint(latest_checkpoint(cut))[2], read_jsonl_log(cut / "metrics.jsonl")
    diverged(SimpleNamespace(meta=meta, state=state, final=final, metrics=metrics))
    assert_identical_runs(tmp_path / "whole", tmp_path / "cut")


def test_steps_skipped_before_the_checkpoint_are_still_counted_after_resume(tmp_path, monkeypatch):
    """A non-finite step before the checkpoint (step 2, made NaN here) is counted once in the uninterrupted run
    and once in the resumed one: the count survives the resume, in meta.json and in the logged skipped_steps."""
    recipe, current = image_text(), {}
    real_lr_at, real_gradients = loop.lr_at, loop.step_gradients

    def note_step(step, *args):
        current["step"] = step
        return real_lr_at(step, *args)

    def nan_at_step_2(*args):
        loss = real_gradients(*args)
        return torch.full_like(loss, float("nan")) if current["step"] == 2 else loss

    monkeypatch.setattr(loop, "lr_at", note_step)
    monkeypatch.setattr(loop, "step_gradients", nan_at_step_2)
    loop.pretrain(recipe, tmp_path / "whole")
    resumed_from = crash_then_resume(recipe, tmp_path / "cut", monkeypatch)
    assert resumed_from.name == "step_4" and checkpoint(resumed_from)[0]["skipped_steps"] == 1
    assert_identical_runs(tmp_path / "whole", tmp_path / "cut")
    assert [m["skipped_steps"] for m in read_jsonl_log(tmp_path / "cut" / "metrics.jsonl")] == [0, 1, 1, 1]


def test_the_grad_scaler_state_is_resumed_on_cpu(tmp_path, monkeypatch):
    """fp16 needs a GPU, so here the loop gets a CPU GradScaler (fp32 autocast) whose scale doubles every 3 steps:
    the loop's own scale / unscale / step / update, checkpoint and resume code runs, and the scale and growth
    tracker saved at step 4 (2^11, 1) must carry on to those of the uninterrupted run at step 8."""
    monkeypatch.setattr(loop, "_precision", lambda precision, device: (
        contextlib.nullcontext(), torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)))
    recipe = image_text()
    loop.pretrain(recipe, tmp_path / "whole")
    resumed_from = crash_then_resume(recipe, tmp_path / "cut", monkeypatch)
    scaler = checkpoint(resumed_from)[0]["grad_scaler"]
    assert (scaler["scale"], scaler["_growth_tracker"]) == (2.0 ** 11, 1)
    assert_identical_runs(tmp_path / "whole", tmp_path / "cut")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 training and its GradScaler need a CUDA GPU")
def test_fp16_with_its_grad_scaler_resumes_exactly_on_a_gpu(tmp_path, monkeypatch):
    """Real fp16 autocast on a GPU, with EMA: the scaler's scale and growth tracker, the EMA and the weights."""
    recipe = image_text("device=cuda", "train.precision=fp16", "train.ema_decay=0.9")
    loop.pretrain(recipe, tmp_path / "whole")
    resumed_from = crash_then_resume(recipe, tmp_path / "cut", monkeypatch)
    meta, _, state = checkpoint(resumed_from)
    assert meta["grad_scaler"]["_growth_tracker"] > 0 or meta["grad_scaler"]["scale"] != 2.0 ** 16
    ema_moved(SimpleNamespace(meta=meta, state=state))
    assert_identical_runs(tmp_path / "whole", tmp_path / "cut")
