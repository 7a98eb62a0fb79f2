"""Nothing the project loads can run code: every torch.load passes weights_only=True, no module imports pickle,
numpy never loads with allow_pickle=True. A static check of src/ and stages/ with ast: cheap, no imports run."""

import ast
from pathlib import Path

import pytest

from conftest import REPO

CHECKED = ("src", "stages")
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "cloudpickle", "dill", "shelve"}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
NUMPY_LOADS = {"numpy.load"}
ALWAYS_UNSAFE = {"pandas.read_pickle", "joblib.load"}


def dotted(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``np.load`` → "numpy.load", following the module's imports; None for anything but a dotted name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def is_true(call: ast.Call, keyword: str) -> bool | None:
    """Whether ``call`` passes ``keyword=True`` (None: not passed at all, or not as a literal)."""
    for kw in call.keywords:
        if kw.arg == keyword and isinstance(kw.value, ast.Constant):
            return kw.value.value is True
    return None


def problems(source: str, filename: str = "<source>") -> tuple[list[str], int]:
    """(one line per unsafe load or pickle import, the number of torch.load calls seen)."""
    tree = ast.parse(source, filename)
    aliases, found, torch_loads = {}, [], 0
    for node in ast.walk(tree):  # imports first, wherever they are, so that aliases resolve every call below
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
                if top in PICKLE_MODULES:
                    found.append(f"{filename}:{node.lineno}: imports {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module.split(".")[0] in PICKLE_MODULES:
                found.append(f"{filename}:{node.lineno}: imports from {module}")
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func, aliases)
        where = f"{filename}:{node.lineno}: {name}"
        if name in TORCH_LOADS:
            torch_loads += 1
            if is_true(node, "weights_only") is not True:
                found.append(f"{where} without weights_only=True")
        elif name in NUMPY_LOADS:
            allow = is_true(node, "allow_pickle")
            unknown = any(kw.arg in ("allow_pickle", None) for kw in node.keywords) or len(node.args) > 2
            if allow:
                found.append(f"{where} with allow_pickle=True")
            elif allow is None and unknown:  # passed positionally, through **kwargs or as a variable
                found.append(f"{where} with an allow_pickle that is not a literal False")
        elif name in ALWAYS_UNSAFE:
            found.append(f"{where} unpickles")
    return found, torch_loads


def checked_files() -> list[Path]:
    return sorted(p for d in CHECKED for p in (REPO / d).rglob("*.py"))


def test_no_unsafe_loading_in_src_and_stages():
    files = checked_files()
    assert any(p.parts[-2] == "stages" for p in files) and any("depthstudy" in p.parts for p in files)
    found, torch_loads = [], 0
    for path in files:
        more, count = problems(path.read_text(), str(path.relative_to(REPO)))
        found += more
        torch_loads += count
    assert not found, "\n".join(found)
    assert torch_loads >= 2  # the checkpoints and the prepared splits: the scan did see the project's loads


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import torch\ntorch.load(p)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load(p, weights_only=False)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load(p, **kw)", "torch.load without weights_only=True"),
        ("import torch as T\nT.load(p, map_location='cpu')", "torch.load without weights_only=True"),
        ("from torch import load\nload(p)", "torch.load without weights_only=True"),
        ("def f():\n    from torch.serialization import load as l\n    return l(p)", "torch.serialization.load"),
        ("import pickle", "imports pickle"),
        ("def f():\n    import dill", "imports dill"),
        ("from pickle import loads", "imports from pickle"),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", "numpy.load with allow_pickle=True"),
        ("import numpy\nnumpy.load(p, allow_pickle=flag)", "numpy.load with an allow_pickle that is not a literal"),
        ("import numpy as np\nnp.load(p, None, True)", "numpy.load with an allow_pickle that is not a literal"),
        ("import pandas as pd\npd.read_pickle(p)", "pandas.read_pickle unpickles"),
    ],
)
def test_the_check_catches_unsafe_loads(source, expected):
    found, _ = problems(source)
    assert len(found) == 1 and expected in found[0], found


def test_the_check_passes_safe_loads():
    source = (
        "import torch\nimport numpy as np\n"
        "torch.load(p, map_location='cpu', weights_only=True)\nnp.load(p)\nnp.load(p, allow_pickle=False)\n"
    )
    assert problems(source) == ([], 1)
