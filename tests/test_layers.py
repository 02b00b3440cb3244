"""The layers only point down: the import rules of posttrain's layout (README, "Layout"), read with ``ast``.

    pytest tests/test_layers.py -q

Every ``import`` in ``posttrain/`` and ``rewards/`` counts, at module level or inside a function, except
under ``if TYPE_CHECKING:``. The rules:

1. No import cycle among the project's modules.
2. The lower layers (engines, retrieval, verification, the maths, the reward plugins) never import the
   trainer, a method, the training entry point or the command line.
3. Nothing under ``posttrain/`` imports the built-in plugins (``rewards/``): they import ``posttrain``.
4. Nothing imports the command line (``posttrain.cli``): it only dispatches.
5. No module imports another module's private (``_name``) names.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("posttrain", "rewards")
LOWER = ("posttrain.rollout", "posttrain.retrieval", "posttrain.verify", "posttrain.advantages", "rewards")
UPPER = ("posttrain.trainer", "posttrain.methods", "posttrain.train", "posttrain.cli")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, list[str], int]]:
    """(imported module, names imported from it, line) for every project import in ``path``."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] in PACKAGES]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            if module.split(".")[0] not in PACKAGES:
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{module}.{n}" in modules]
            if len(submodules) < len(names):  # `from pkg import sub` imports the submodule, not pkg's names
                out.append((module, [n for n in names if n not in submodules], node.lineno))
            out += [(f"{module}.{n}", [], node.lineno) for n in submodules]
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {
        name: {m for m, _, _ in imports(name, path, modules) if m in modules and m != name}
        for name, path in modules.items()
    }


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt) :] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_lower_layers_never_import_upper_ones():
    bad = [
        f"{name} imports {dep}"
        for name, deps in _graph().items()
        if _within(name, LOWER)
        for dep in deps
        if _within(dep, UPPER)
    ]
    assert not bad, bad


def test_posttrain_never_imports_the_builtin_plugins():
    bad = [
        f"{n} imports {d}"
        for n, deps in _graph().items()
        if n.startswith("posttrain")
        for d in deps
        if _within(d, ("rewards",))
    ]
    assert not bad, bad


def test_nothing_imports_the_command_line():
    bad = [
        f"{n} imports {d}"
        for n, deps in _graph().items()
        if n != "posttrain.cli"
        for d in deps
        if d == "posttrain.cli"
    ]
    assert not bad, bad


def test_no_module_imports_private_names():
    modules = _modules()
    bad = [
        f"{name}:{line} imports {module}.{n}"
        for name, path in modules.items()
        for module, names, line in imports(name, path, modules)
        for n in names
        if n.startswith("_") and not n.startswith("__") and module != name
    ]
    assert not bad, bad


def test_code_never_points_readers_outside_the_repository():
    """Docstrings and comments cite the paper and docs/methods.md, never the team's shared notes."""
    bad = [
        f"{path.relative_to(REPO)}:{i}"
        for folder in (*PACKAGES, "bench", "tests", "recipes")
        for path in (REPO / folder).rglob("*")
        if path.suffix in (".py", ".yaml", ".sh") and path.name != "test_layers.py"
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if "../shared" in line
    ]
    assert not bad, bad
