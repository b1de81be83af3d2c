"""Nothing a user hands in is executed: no unpickling, no eval, no unsafe YAML, anywhere in the package."""

import ast
import os
from pathlib import Path

import pytest
import torch

import transferlab
from transferlab.errors import UserError
from transferlab.models.openclip import read_weights

PACKAGE = Path(transferlab.__file__).parent
UNSAFE_MODULES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib"}


def unsafe_uses(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [f"import {n}" for n in names if n.split(".")[0] in UNSAFE_MODULES]
        if not isinstance(node, ast.Call):
            continue
        func, keywords = node.func, {k.arg: k.value for k in node.keywords}
        name = ast.unparse(func)
        if name in ("eval", "exec", "compile", "__import__"):
            found.append(name)
        elif name == "torch.load" and not (isinstance(keywords.get("weights_only"), ast.Constant)
                                          and keywords["weights_only"].value is True):
            found.append("torch.load without weights_only=True")
        elif name in ("yaml.load", "yaml.unsafe_load", "yaml.full_load", "yaml.load_all"):
            found.append(name)
        elif name.endswith(("np.load", "numpy.load")) and "allow_pickle" in keywords and not (
                isinstance(keywords["allow_pickle"], ast.Constant) and keywords["allow_pickle"].value is False):
            found.append("np.load with allow_pickle")
        if isinstance(keywords.get("trust_remote_code"), ast.Constant) and keywords["trust_remote_code"].value:
            found.append("trust_remote_code=True")
    return found


def test_the_scanner_finds_each_unsafe_use():
    bad = ("import pickle\nfrom dill import loads\neval('1')\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "yaml.load(s)\nnp.load(p, allow_pickle=True)\nAutoModel.from_pretrained(p, trust_remote_code=True)\n")
    assert len(unsafe_uses(bad)) == 8
    assert unsafe_uses("torch.load(p, weights_only=True)\nyaml.safe_load(s)\nmodel.eval()\n"
                       "np.load(p, allow_pickle=False)\n") == []
    assert unsafe_uses("np.load(p, allow_pickle=flag)\n") == ["np.load with allow_pickle"]


def test_no_module_of_the_package_unpickles_or_executes_input():
    offenders = {str(path.relative_to(PACKAGE)): uses for path in sorted(PACKAGE.rglob("*.py"))
                 if (uses := unsafe_uses(path.read_text(encoding="utf-8")))}
    assert offenders == {}


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['TRANSFERLAB_MARKER']}",))


def test_a_pickled_payload_is_refused_and_never_runs(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("TRANSFERLAB_MARKER", str(marker))
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(UserError, match=r"weights\.pt cannot be read as model weights"):
        read_weights(path)
    assert not marker.exists()


def test_a_torch_file_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(UserError, match="holds a list, not a state dict of tensors"):
        read_weights(path)
