"""Mixtures of datasets in training: weights, the late schedule, exact steps, labels kept apart, validation."""

import json
import math

import pytest
import torch

from transferlab.config import load_recipe
from transferlab.data.captions import CaptionTable
from transferlab.data.dataset import ImageTextData
from transferlab.data.mixture import MixtureSampler, combine, late_start, load_training_data
from transferlab.data.readers.sources import load_splits
from transferlab.data.readers.text_pairs import TextPairData
from transferlab.data.stream.permutation import Permutation
from transferlab.distributed import World
from transferlab.errors import UserError
from transferlab.train.batches import BatchMaker
from transferlab.train.loop import pretrain

# two collections of sklearn digits (scans: another split seed), quick to load
TWO_SOURCES = ["datasets.scans.source=digits", "datasets.scans.splits={train: 0.7, val: 0.1, test: 0.2, seed: 1}"]


def images(n: int, labels: list[int] | None, classnames: list[str] | None, caption: str = "c{}") -> ImageTextData:
    return ImageTextData(name="x", images=torch.zeros(n, 1, 4, 4, dtype=torch.uint8),
                         captions=[[caption.format(i if labels is None else labels[i])] for i in range(n)],
                         labels=None if labels is None else torch.tensor(labels), classnames=classnames)


def makers(recipe, sizes: list[int]) -> list[list[BatchMaker]]:
    """BatchMakers of `recipe` as pretrain builds them, for one or several processes."""
    mixture = load_training_data(recipe)
    data, spec = mixture.data, recipe.train
    sampler = MixtureSampler.for_recipe(spec, recipe.seed, mixture) if spec.mixture else None
    captions = CaptionTable(data.captions)
    return [[BatchMaker(recipe, len(data), torch.device("cpu"), data.images, data.labels, captions, 2,
                        world=World(rank, size), mixture=sampler) for rank in range(size)] for size in sizes]


def fields(batch) -> dict[str, torch.Tensor]:
    return {"index": batch.index, "labels": batch.labels, "caption_ids": batch.caption_ids,
            "positive_ids": batch.positive_ids, "view0": batch.views[0], "view1": batch.views[1]}


# --------------------------------------------------------------------------------------------- sampling


def test_realised_source_shares_match_the_weights_within_a_binomial_interval():
    sizes, weights, batch, steps = [50, 30, 20], [6.0, 3.0, 1.0], 64, 300
    sampler = MixtureSampler(sizes, weights, None, late_from=steps, batch_size=batch, seed=3)
    counts = torch.zeros(3, dtype=torch.long)
    for step in range(steps):
        index = sampler.draw(step)
        source = torch.bucketize(index, torch.tensor([50, 80]), right=True)  # positions 0-49, 50-79, 80-99
        assert torch.equal(torch.bincount(source, minlength=3), sampler.counts(step))
        for s, (start, size) in enumerate(zip([0, 50, 80], sizes, strict=True)):
            picked = index[source == s]
            assert len(picked.unique()) == len(picked) or len(picked) > size  # distinct within a step
            assert picked.ge(start).all() and picked.lt(start + size).all()
        counts += sampler.counts(step)
    n = steps * batch
    for count, weight in zip(counts.tolist(), weights, strict=True):
        p = weight / sum(weights)
        # a two-sided binomial interval of about 5 standard deviations (normal approximation, n*p >= 1900)
        assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)), (count, n * p)


@pytest.mark.parametrize(("steps", "fraction", "first_late"), [
    (40, 0.15, 34),    # 6 of 40 steps are late (0.15 * 40 is 6.000000000000001 in floating point)
    (150, 0.15, 127),  # 22.5 rounds up to 23 late steps
    (10, 0.5, 5),
    (3, 0.1, 2),       # at least one late step
])
def test_late_phase_starts_at_the_right_step(steps, fraction, first_late):
    assert late_start(steps, fraction) == first_late
    mixture = combine({"a": images(20, None, None), "b": images(20, None, None)})
    recipe = load_recipe(None, ["datasets.a.source=digits", "datasets.b.source=digits", "train.data={a: 1, b: 1}",
                                "train.late_data={b: 1}", f"train.late_fraction={fraction}", f"train.steps={steps}",
                                "train.batch_size=32"])
    sampler = MixtureSampler.for_recipe(recipe.train, recipe.seed, mixture)
    from_a = [sampler.counts(step)[0].item() for step in range(steps)]
    # before the boundary both sources are drawn (no `a` in 32 rows has chance 2^-32); from it on, only `b`
    assert all(count > 0 for count in from_a[:first_late]) and not any(from_a[first_late:])


def test_a_step_is_a_pure_function_of_its_number_and_two_ranks_shard_the_one_process_batch():
    recipe = load_recipe(None, [*TWO_SOURCES, "train.data={digits: 3, scans: 1}", "train.late_data={scans: 1}",
                                "train.steps=100", "train.batch_size=12", "train.augment.low_res_prob=0.5"])
    (whole,), ranks = makers(recipe, [1, 2])
    (again,), = makers(recipe, [1])
    for step in (0, 7, 99, 3):  # 99 is late; 3 after a later step
        expected = fields(whole(step))
        assert all(torch.equal(value, expected[key]) for key, value in fields(again(step)).items())
        parts = [fields(maker(step)) for maker in ranks]
        for key, value in expected.items():
            assert torch.equal(torch.cat([part[key] for part in parts]), value), key
    assert whole(99).labels.ge(10).all() and whole(0).labels.lt(10).any()  # late: only `scans`, classes 10-19


def test_all_captions_with_a_mixture_gives_every_caption_of_every_drawn_image():
    recipe = load_recipe(None, [*TWO_SOURCES, "train.data={digits: 1, scans: 1}", "train.captions=all",
                                "train.batch_size=12"])
    (maker,), = makers(recipe, [1])
    batch = maker(5)
    assert len(batch.caption_ids) == 2 * 12  # the default templates: two captions per image
    assert torch.equal(batch.row_image, torch.arange(12).repeat_interleave(2))


# ------------------------------------------------------------------------------------- one dataset as before


@pytest.mark.parametrize("data", ["digits", "{digits: 1}"])
def test_a_single_dataset_gives_the_batches_of_before(data):
    recipe = load_recipe(None, [f"train.data={data}", "train.batch_size=12"])
    (new,), = makers(recipe, [1])
    old_data = load_splits("digits", recipe.datasets["digits"], recipe.model.image_size,
                           recipe.model.channels)["train"]
    captions = CaptionTable(old_data.captions)
    old = BatchMaker(recipe, len(old_data), torch.device("cpu"), old_data.images, old_data.labels, captions, 2)
    assert new.order.mixture is None
    steps_per_epoch = len(old_data) // 12
    for step in (0, 5, steps_per_epoch + 1):
        expected = fields(old(step))
        assert all(torch.equal(value, expected[key]) for key, value in fields(new(step)).items())
        epoch, position = divmod(step, steps_per_epoch)  # the epoch's seeded order
        order = Permutation.derived(len(old_data), recipe.seed, "order", epoch)
        assert expected["index"].tolist() == order.take(position * 12, (position + 1) * 12).tolist()


# ---------------------------------------------------------------------------------------------- combining


def test_labels_are_offset_and_class_names_prefixed_so_sources_never_share_a_class():
    mixture = combine({"mnist": images(3, [0, 1, 2], ["zero", "one", "two"]),
                       "scans": images(2, [0, 1], ["zero", "one"])})
    data = mixture.data
    assert data.labels.tolist() == [0, 1, 2, 3, 4]
    assert data.classnames == ["mnist/zero", "mnist/one", "mnist/two", "scans/zero", "scans/one"]
    assert mixture.source_ids.tolist() == [0, 0, 0, 1, 1] and mixture.sizes == [3, 2]
    captions = CaptionTable(data.captions)
    # a "zero" of each source has the caption "c0", but by label (auto) they are not matches; by caption they are
    by_caption = captions.first_ids(torch.arange(5))
    assert by_caption[0] == by_caption[3] and by_caption[1] == by_caption[4] and by_caption[2] != by_caption[0]


def test_a_source_without_labels_drops_the_mixtures_labels_and_text_pairs_combine():
    mixed = combine({"a": images(2, [0, 1], ["zero", "one"]), "b": images(3, None, None)}).data
    assert mixed.labels is None and mixed.classnames is None and len(mixed) == 5
    pairs = combine({"p": TextPairData("p", ["q1"], ["a1"]), "q": TextPairData("q", ["q2", "q3"], ["a2", "a3"])})
    assert pairs.data.left == ["q1", "q2", "q3"] and pairs.data.right == ["a1", "a2", "a3"]
    assert pairs.source_ids.tolist() == [0, 1, 1]


def test_an_empty_source_is_refused_by_name():
    with pytest.raises(UserError, match="'b', whose train split is empty"):
        combine({"a": images(2, None, None), "b": images(0, None, None)})


# --------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("overrides", "message"), [
    (["train.data={mnist5k: 1, digitz: 1}"], "train.data names dataset 'digitz'.*Did you mean 'digits'.*"
                                             "Defined: mnist5k, digits"),
    (["train.data={mnist5k: 1, digits: 0}"], "gives dataset 'digits' the weight 0.0; weights must be positive"),
    (["train.data={mnist5k: 1, digits: -2}"], "gives dataset 'digits' the weight -2.0"),
    (["train.data={}"], "train.data is an empty mapping"),
    (["train.data=[mnist5k, digits]"], "must be a dataset key .* or a mapping of dataset keys to weights"),
    (["train.late_data={digits: 1}"], "train.late_data reweighs a mixture, but train.data is the single dataset "
                                      "'mnist5k'"),
    (["train.data={mnist5k: 1, digits: 1}", "train.late_data={scans: 1}", *TWO_SOURCES],
     "train.late_data names dataset 'scans', which train.data does not mix \\(mnist5k, digits\\)"),
    (["train.data={mnist5k: 1, digits: 1}", "train.late_data={mnist5k: 0}"], "train.late_data gives dataset "
                                                                            "'mnist5k' the weight 0.0"),
    (["train.data={mnist5k: 1, digits: 1}", "train.late_fraction=1"], "'train.late_fraction': Input should be less"),
    (["datasets.qa.source=docstrings", "train.data={mnist5k: 1, qa: 1}"],
     "mixes text-pair datasets \\(qa\\) with image datasets \\(mnist5k\\)"),
])
def test_bad_mixtures_are_refused_with_the_key_and_the_fix(overrides, message):
    with pytest.raises(UserError, match=message):
        load_recipe(None, overrides)


# ------------------------------------------------------------------------------------------------ training


def test_pretraining_on_a_mixture_logs_the_shares_of_the_sources(tiny_overrides, tmp_path):
    recipe = load_recipe(None, [*tiny_overrides, *TWO_SOURCES, "train.data={digits: 1, scans: 1}",
                                "train.late_data={scans: 1}"])  # 8 steps: the last ceil(1.2) = 2 are late
    pretrain(recipe, tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4, 6, 8]
    assert all(math.isfinite(line["loss"]) for line in lines)
    for line in lines:
        assert line["mix/digits"] + line["mix/scans"] == pytest.approx(1.0)
    assert 0 < lines[0]["mix/digits"] < 1 and lines[-1]["mix/scans"] == 1.0  # steps 7 and 8 drew only scans
    assert sorted(json.loads((tmp_path / "data_report.json").read_text())) == ["digits", "scans"]
