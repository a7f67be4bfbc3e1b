"""The import graph of ``dynamo_media`` is a tree of floors (STYLE.md): no circle, and no import of
our own modules hidden inside a function to dodge one."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dynamo_media"
# The command line imports each subcommand's modules when that subcommand runs (startup time).
LAZY_OK = {"dynamo_media.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """The ``dynamo_media`` modules a file imports: (all of them, those inside a function)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    in_functions: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        ours = {n for n in names if n == "dynamo_media" or n.startswith("dynamo_media.")}
        found |= ours
        if ours and any(
            isinstance(parent, (ast.FunctionDef, ast.AsyncFunctionDef)) and node in ast.walk(parent)
            for parent in ast.walk(tree)
        ):
            in_functions |= ours
    return found, in_functions


def graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    edges, lazy = {}, {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        edges[name], lazy[name] = imports(path)
    return edges, lazy


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle (``[a, b, ..., a]``), or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


class TestImportGraph:
    def test_no_circle(self) -> None:
        edges, _ = graph()
        assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])

    def test_no_import_hidden_in_a_function(self) -> None:
        _, lazy = graph()
        hidden = {name: sorted(mods) for name, mods in lazy.items() if mods}
        assert set(hidden) <= LAZY_OK, hidden

    def test_the_checker_finds_a_circle(self) -> None:
        assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
        assert find_cycle({"a": {"b"}, "b": set()}) is None

    def test_values_import_nothing_above_them(self) -> None:
        edges, _ = graph()
        floor = {"dynamo_media._errors", "dynamo_media._options"}
        assert edges["dynamo_media.config"] <= floor


# transformers is the ``backend`` extra: only the torch backend's modules may import it.
TRANSFORMERS_OK = {"dynamo_media.backend._torch", "dynamo_media.backend._tiny"}


def third_party(path: Path) -> set[str]:
    """The top-level packages a file imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_torch_backend_imports_transformers() -> None:
    importers = {
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if third_party(path) & {"transformers", "tokenizers"}
    }
    assert importers == TRANSFORMERS_OK
    edges, _ = graph()
    # and nothing else reaches them but the command line, which loads them for --kind torch
    reaching = {name for name, mods in edges.items() if mods & TRANSFORMERS_OK}
    assert reaching <= TRANSFORMERS_OK | LAZY_OK, reaching
