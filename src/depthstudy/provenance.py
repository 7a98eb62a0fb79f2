"""Which of the project's source files a stage runs: the import closure of its script within ``depthstudy``.

dvc.yaml lists exactly these files as each stage's code deps (tests/test_dvc_contract.py checks it), and a
training run's resume state records their digests, so a run killed under one version of the code is never
resumed under another. Found statically with ``ast``: every ``import depthstudy…`` / ``from depthstudy… import``
anywhere in a file, including inside functions. Third-party code is pinned by requirements.txt instead.
"""

import ast
import hashlib
from pathlib import Path

PACKAGE = "depthstudy"


def _module_file(src: Path, module: str) -> Path | None:
    """``depthstudy.train`` → src/depthstudy/train.py (or a package's __init__.py); None if it is not a module."""
    base = src.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_modules(path: Path) -> set[str]:
    """The ``depthstudy`` modules a file imports, with every parent package (importing a.b runs a/__init__.py)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level:
            raise ValueError(f"{path}:{node.lineno}: relative import; write it as `from {PACKAGE}… import …`")
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from depthstudy import train` imports the module depthstudy.train; keep both candidates
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == PACKAGE:
                found.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return found


def import_closure(script: Path, src: Path) -> list[Path]:
    """``script`` and every module file under ``src`` it imports, directly or not, sorted."""
    seen = {script}
    todo = [script]
    while todo:
        for module in _imported_modules(todo.pop()):
            path = _module_file(src, module)
            if path is not None and path not in seen:
                seen.add(path)
                todo.append(path)
    return sorted(seen)


def code_digests(script: Path) -> dict[str, str]:
    """{path relative to the project root: sha256} of the code ``script`` runs (the project = script's grandparent)."""
    root = script.resolve().parents[1]
    files = import_closure(script.resolve(), root / "src")
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
