"""The training loop's wiring, checked against hand computations of one step.

Each test runs `pretrain` for one step of a tiny recipe, records the batch the loop made (`BatchMaker`'s
output, unchanged), and recomputes from the recipe alone what the loop should have done with it:

- the update: the same initial weights, the loss, gradients by torch.autograd, clipped to `train.grad_clip`
  (the total-norm formula) and one AdamW step, written out, against the saved weights;
- the logged loss: the loss function of `losses/` called with the recipe's options (`label_smoothing`,
  `temperature`) on the initial weights and the batch;
- the augmentation: images whose pixels are their own coordinates go through the loop, and each view's
  rotation, scale, shift (and random resized crop box, mirroring) are read back off its pixels, and noise
  images' losses of resolution off their rank, and checked against the configured ranges.

The recipe/option tests (test_objectives_train.py) only see a finite, falling loss; these see the numbers.
"""

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from transferlab.config import load_recipe
from transferlab.losses import clip_loss, supcon_loss
from transferlab.models.dual_encoder import DualEncoder
from transferlab.runtime import seed_everything
from transferlab.train.batches import BatchMaker
from transferlab.train.loop import pretrain

ONE_STEP = ["train.steps=1", "train.log_every=1", "train.checkpoint_every=1", "train.warmup_steps=0",
            "train.schedule=constant"]
IMAGE_ONLY = ["model.text=null", "eval.tasks=[linear_probe]"]


@pytest.fixture
def one_step(tiny_overrides, tmp_path, monkeypatch):
    """Train one step of the tiny recipe with `extra` overrides; the recipe, the step's batch (with its caption
    texts as `batch.texts`) and the run dir."""
    made = []
    make = BatchMaker.__call__

    def recording(self, step, loaded=None):
        batch = make(self, step, loaded)
        made.append(copy.deepcopy(batch))
        if batch.caption_ids is not None:
            made[-1].texts = [self.captions.texts[i] for i in batch.caption_ids.tolist()]
        return batch

    monkeypatch.setattr(BatchMaker, "__call__", recording)

    def run(extra: list[str]):
        recipe = load_recipe(None, tiny_overrides + ONE_STEP + extra)
        run_dir = tmp_path / "run"
        pretrain(recipe, run_dir)
        assert len(made) == 1
        return recipe, made[0], run_dir
    return run


def initial_weights(recipe):
    """The model (and the ce classifier) as the loop starts: built in this order right after seeding."""
    seed_everything(recipe.seed)
    model = DualEncoder(recipe.model)
    classifier = nn.Linear(recipe.model.embed_dim, 10) if recipe.train.objective == "ce" else None  # mnist5k's
    return model, classifier


def hand_loss(recipe, model, classifier, batch) -> torch.Tensor:
    """The step's loss, from `losses/` and the recipe's options (not from train/objectives.py)."""
    spec = recipe.train
    views = [model.encode_image(view, normalize=False) for view in batch.views]
    if spec.objective == "clip":
        text = model.project_text(model.text_features(batch.texts), normalize=False)
        image = F.normalize(views[0], dim=-1)[batch.row_image]
        return clip_loss(image, F.normalize(text, dim=-1), model.logit_scale.exp(),
                         positive_ids=batch.positive_ids, label_smoothing=spec.label_smoothing)
    if spec.objective == "ce":
        return F.cross_entropy(classifier(views[0]), batch.labels, label_smoothing=spec.label_smoothing)
    assert spec.objective == "supcon"
    return supcon_loss(F.normalize(torch.cat(views), dim=-1), torch.cat([batch.labels, batch.labels]),
                       spec.temperature)


def logged(run_dir, key: str) -> float:
    return json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])[key]


# ------------------------------------------------------------------------------------------- the update


def adamw_step(parameters, grads, spec, lr) -> list[torch.Tensor]:
    """One AdamW step from zero moments, written out; decay on matrices only (optim.parameter_groups)."""
    (beta1, beta2), updated = spec.betas, []
    for parameter, grad in zip(parameters, grads, strict=True):
        decay = spec.weight_decay if parameter.ndim >= 2 else 0.0
        first, second = (1 - beta1) * grad, (1 - beta2) * grad * grad
        step = (first / (1 - beta1)) / (second.sqrt() / math.sqrt(1 - beta2) + spec.eps)
        updated.append(parameter.detach() * (1 - lr * decay) - lr * step)
    return updated


def test_one_step_is_the_clipped_adamw_update_of_the_loss(one_step):
    recipe, batch, run_dir = one_step(["train.grad_clip=0.05", "train.label_smoothing=0.1"])
    spec = recipe.train
    model, _ = initial_weights(recipe)
    names, parameters = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad], strict=True)
    grads = torch.autograd.grad(hand_loss(recipe, model, None, batch), parameters)
    norm = torch.sqrt(sum(g.double().pow(2).sum() for g in grads)).item()
    assert norm > spec.grad_clip  # so clipping acts
    clipped = [g * min(1.0, spec.grad_clip / (norm + 1e-6)) for g in grads]
    expected = adamw_step(parameters, clipped, spec, spec.lr)

    saved = load_file(run_dir / "checkpoints" / "step_1" / "model.safetensors")
    errors = {name: (saved[name] - want).abs().max().item() for name, want in zip(names, expected, strict=True)}
    assert max(errors.values()) < 1e-6, sorted(errors.items(), key=lambda item: -item[1])[:5]
    # the check has the power to see clipping: unclipped, the update would differ far beyond the tolerance
    unclipped = adamw_step(parameters, grads, spec, spec.lr)
    assert max((a - b).abs().max().item() for a, b in zip(unclipped, expected, strict=True)) > 1e-4


# ------------------------------------------------------------------------------------------ the loss


LOSS_OPTIONS = {
    "clip-label-smoothing": ["train.label_smoothing=0.2"],
    "ce-label-smoothing": IMAGE_ONLY + ["train.objective=ce", "train.label_smoothing=0.2"],
    "supcon-temperature": IMAGE_ONLY + ["train.objective=supcon", "train.temperature=0.5"],
}


@pytest.mark.parametrize("option", list(LOSS_OPTIONS))
def test_logged_loss_is_the_loss_with_the_recipes_options(option, one_step):
    recipe, batch, run_dir = one_step(LOSS_OPTIONS[option])
    model, classifier = initial_weights(recipe)
    with torch.no_grad():
        want = hand_loss(recipe, model, classifier, batch).item()
        plain = recipe.model_copy(update={"train": recipe.train.model_copy(
            update={"label_smoothing": 0.0, "temperature": 0.1})})
        without = hand_loss(plain, model, classifier, batch).item()
    assert abs(want - without) > 1e-4 * abs(want)  # the option moves the loss 100 times the tolerance below
    assert logged(run_dir, "loss") == pytest.approx(want, rel=1e-6)


# ------------------------------------------------------------------------------------------ the augmentation

SIDE = 28  # the tiny recipe's image size
IMAGES = 64  # the whole dataset, one batch
NO_AFFINE = ["train.augment.rotate_degrees=0", "train.augment.scale=0", "train.augment.translate=0"]


def image_folder(folder, pixels: np.ndarray) -> list[str]:
    """Overrides that train on a folder dataset of IMAGES copies of the RGB image `pixels`, all in one batch,
    with no loss of resolution."""
    rows = ["image,caption"]
    for i in range(IMAGES):
        Image.fromarray(pixels).save(folder / f"{i}.png")
        rows.append(f"{i}.png,image {i}")
    (folder / "images.csv").write_text("\n".join(rows) + "\n")
    return ["datasets.images.source=folder", f"datasets.images.table={folder / 'images.csv'}",
            "datasets.images.splits.train=1", "datasets.images.splits.val=0", "datasets.images.splits.test=0",
            "train.data=images", f"train.batch_size={IMAGES}", "model.channels=3", "train.augment.low_res_prob=0"]


@pytest.fixture
def ramps(tmp_path) -> list[str]:
    """Images whose pixels are their coordinates: red = 40 + 7·column, green = 40 + 7·row (exact in uint8, and
    bilinear interpolation keeps a linear function exact), blue 255 (less only where a sample reaches past the
    image's edge)."""
    index = np.arange(SIDE)
    red = np.broadcast_to(40 + 7 * index, (SIDE, SIDE))
    return image_folder(tmp_path, np.stack([red, red.T, np.full((SIDE, SIDE), 255)], axis=-1).astype(np.uint8))


def source_points(view: torch.Tensor, recipe) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a normalised view [3, H, W] of a ramp image: the grid coordinates (x, y in [-1, 1], align_corners=False)
    of each output pixel [H·W, 2], of the source point it was sampled from [H·W, 2], and its blue value [H·W]."""
    mean, std = (torch.tensor(v).view(-1, 1, 1).expand(3, 1, 1) for v in (recipe.model.mean, recipe.model.std))
    red, green, blue = ((view * std + mean) * 255).double()
    centres = (2 * torch.arange(SIDE, dtype=torch.float64) + 1) / SIDE - 1
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    source = torch.stack([(2 * (red - 40) / 7 + 1) / SIDE - 1, (2 * (green - 40) / 7 + 1) / SIDE - 1], -1)
    return torch.stack([x, y], -1).reshape(-1, 2), source.reshape(-1, 2), blue.reshape(-1)


def fitted_affine(output: torch.Tensor, source: torch.Tensor) -> tuple[list[list[float]], float]:
    """theta (2 rows of 3) with source = theta · (x, y, 1), by least squares, and the largest residual."""
    assert len(output) >= 12, f"only {len(output)} pixels sampled the image: the transform is far too large"
    design = torch.cat([output, torch.ones(len(output), 1, dtype=output.dtype)], 1)
    theta = torch.linalg.lstsq(design, source).solution.T
    return theta.tolist(), (design @ theta.T - source).abs().max().item()


AFFINE = {"rotate_degrees": 20.0, "scale": 0.2, "translate": 0.05}


def test_augmentation_rotates_scales_and_shifts_within_the_recipes_ranges(one_step, ramps):
    recipe, batch, _ = one_step(ramps + [f"train.augment.{key}={value}" for key, value in AFFINE.items()])
    angles, scales, shifts = [], [], []
    for view in batch.views[0]:
        output, source, blue = source_points(view, recipe)
        inside = (blue - 255).abs() < 1e-3  # every pixel it interpolates lies in the image
        theta, residual = fitted_affine(output[inside], source[inside])
        assert residual < 1e-3  # a rotation, scale and shift, nothing else
        # augment's theta maps output to source coordinates: [[cos, -sin], [sin, cos]] / scale, then the shift
        assert theta[0][0] == pytest.approx(theta[1][1], abs=1e-4) and theta[0][1] == pytest.approx(-theta[1][0],
                                                                                                  abs=1e-4)
        angles.append(math.degrees(math.atan2(theta[1][0], theta[0][0])))
        scales.append(1 / math.hypot(theta[0][0], theta[1][0]))
        shifts += [theta[0][2], theta[1][2]]
    observed = {"rotate_degrees": max(map(abs, angles)), "scale": max(abs(s - 1) for s in scales),
                "translate": max(map(abs, shifts)) / 2}  # grid coordinates span 2
    for key, configured in AFFINE.items():  # within the range, and reaching most of it (64 draws)
        assert 0.75 * configured <= observed[key] <= configured + 1e-3, (key, observed[key], configured)


CROP = {"crop_scale": (0.35, 0.5), "crop_ratio": (0.8, 1.25)}  # boxes of any such area and ratio fit


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_random_resized_crops_lie_within_the_recipes_ranges(streamed, one_step, ramps):
    """In memory the stored image is cropped by train/batches.py; streamed, by the decoder (data/images.py)."""
    crop = [f"train.augment.{key}=[{low}, {high}]" for key, (low, high) in CROP.items()] + ["train.augment.flip=true"]
    stream = ["datasets.images.stream=true", "train.loader_workers=0"] if streamed else []
    recipe, batch, run_dir = one_step(ramps + NO_AFFINE + crop + stream)
    assert ("training_stream" in json.loads((run_dir / "data_report.json").read_text())) == streamed
    interior = torch.zeros(SIDE, SIDE, dtype=torch.bool)
    interior[4:-4, 4:-4] = True  # away from the edge, where resampling clamps (bilinear) or renormalises (bicubic)
    areas, ratios, mirrored = [], [], []
    for view in batch.views[0]:
        output, source, _ = source_points(view, recipe)
        theta, residual = fitted_affine(output[interior.flatten()], source[interior.flatten()])
        assert residual < (0.02 if streamed else 1e-3)  # streamed: rounded to uint8 after the crop
        assert abs(theta[0][1]) < 1e-3 and abs(theta[1][0]) < 1e-3  # an axis-aligned box
        # the box's width and height, in pixels (whole ones, up to its rounding), from its share of the image
        width, height = abs(theta[0][0]) * SIDE, theta[1][1] * SIDE
        assert width == pytest.approx(round(width), abs=0.05) and height == pytest.approx(round(height), abs=0.05)
        width, height = round(width), round(height)
        # the drawn area and ratio, before rounding the box to whole pixels, lie within these
        areas.append(((width - 0.5) * (height - 0.5) / SIDE**2, (width + 0.5) * (height + 0.5) / SIDE**2))
        ratios.append(((width - 0.5) / (height + 0.5), (width + 0.5) / (height - 0.5)))
        mirrored.append(theta[0][0] < 0)
    # within the ranges, and reaching most of them: a quarter from each end (of the logarithm, for ratios)
    low, high = CROP["crop_scale"]
    assert all(low <= top and bottom <= high for bottom, top in areas), areas
    quarter = (high - low) / 4
    assert min(top for _, top in areas) <= low + quarter and max(bottom for bottom, _ in areas) >= high - quarter
    low, high = CROP["crop_ratio"]
    assert all(low <= top and bottom <= high for bottom, top in ratios), ratios
    quarter = (high / low) ** 0.25
    assert min(top for _, top in ratios) <= low * quarter and max(bottom for bottom, _ in ratios) >= high / quarter
    assert 0.25 * IMAGES < sum(mirrored) < 0.75 * IMAGES  # mirrored with probability 1/2


LOW_RES = {"low_res_prob": 0.25, "low_res_min": 7, "low_res_max": 10}


def test_losses_of_resolution_lie_within_the_recipes_range(one_step, tmp_path):
    """Noise downsampled to s × s and upsampled back has rank s (and 28 when left alone)."""
    noise = np.random.default_rng(0).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    low_res = [f"train.augment.{key}={value}" for key, value in LOW_RES.items()]
    recipe, batch, _ = one_step(image_folder(tmp_path, noise) + NO_AFFINE + low_res)
    mean, std = recipe.model.mean[0], recipe.model.std[0]
    sides = []
    for view in batch.views[0]:
        singular = torch.linalg.svdvals((view[0] * std + mean).double())
        sides.append(int((singular > 1e-6 * singular[0]).sum()))
    degraded = [side for side in sides if side < SIDE]
    assert all(LOW_RES["low_res_min"] <= side <= LOW_RES["low_res_max"] for side in degraded), sorted(sides)
    assert min(degraded) <= LOW_RES["low_res_min"] + 1 and max(degraded) >= LOW_RES["low_res_max"] - 1, degraded
    assert 0.1 * IMAGES <= len(degraded) <= 0.5 * IMAGES, len(degraded)  # with probability 0.25
