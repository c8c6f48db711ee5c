"""The modules of `mailbot` import each other one way: no import circle, and nothing imports the CLI.

The graph is read from the source (every `import` and `from … import` of `mailbot.*`, at module level or
inside a function, absolute or relative), not from what happens to be loaded: a function-local import
that closes a circle is a circle too — it only fails later, at the first call.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mailbot

PACKAGE = Path(mailbot.__file__).resolve().parent


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = PACKAGE) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The `mailbot` modules that `name` (the module in `path`) imports, anywhere in its body."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()

    def add(target: str) -> None:
        # `import mailbot.mailbox.imap` runs mailbot/mailbox/__init__.py too: each package on the way counts,
        # except one that holds `name` itself. Python imports that package before `name` runs, so passing
        # through it runs nothing (mailbot.parse.mail importing mailbot.parse.headers does not re-enter
        # mailbot/parse/__init__.py); importing from the package itself still counts.
        parts = target.split(".")
        for i in range(1, len(parts) + 1):
            candidate = ".".join(parts[:i])
            holds_name = name.startswith(candidate + ".")
            if candidate in known and candidate != name and (candidate == target or not holds_name):
                found.add(candidate)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's own package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            add(module)
            for alias in node.names:  # `from mailbot import views` imports the module mailbot.views
                add(f"{module}.{alias.name}")
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    found = modules(root)
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_mailbot_modules_import_each_other_without_a_circle() -> None:
    graph = import_graph()
    assert len(graph) > 20, sorted(graph)  # the whole package was read, sub-packages included
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " → ".join(cycle or [])


def test_nothing_in_the_package_imports_the_cli() -> None:
    graph = import_graph()
    importers = sorted(name for name, targets in graph.items()
                       if "mailbot.cli" in targets and name != "mailbot.cli" and not name.startswith("mailbot.cli."))
    assert importers == [], f"these modules import mailbot.cli (the wiring lives in mailbot.wiring): {importers}"


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    # The check itself works: a circle closed by a function-local relative import is found, as are
    # `import a.b`, `from a import b` and `from .b import c`.
    pkg = tmp_path / "mailbot"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("import mailbot.sub.c\n")
    (pkg / "b.py").write_text("from mailbot import a\n")
    (pkg / "sub" / "c.py").write_text("def late():\n    from ..b import thing\n    return thing\n")
    (pkg / "d.py").write_text("from .a import x\n")
    graph = import_graph(pkg)
    assert graph["mailbot.a"] == {"mailbot.sub", "mailbot.sub.c"}  # mailbot itself runs before mailbot.a
    assert graph["mailbot.b"] == {"mailbot", "mailbot.a"}
    assert graph["mailbot.sub.c"] == {"mailbot.b"}
    assert graph["mailbot.d"] == {"mailbot.a"}
    assert graph["mailbot"] == set()
    assert find_cycle(graph) == ["mailbot.a", "mailbot.sub.c", "mailbot.b", "mailbot.a"]
    (pkg / "sub" / "c.py").write_text("")
    assert find_cycle(import_graph(pkg)) is None


def test_a_package_that_re_exports_its_modules_is_no_circle(tmp_path: Path) -> None:
    # mailbot/parse/__init__.py re-exports parse() from mailbot.parse.mail, which imports its siblings: the
    # package is already being imported when they run. A module that imports from its own package is a
    # circle (the name may not be there yet), and is still found.
    pkg = tmp_path / "mailbot"
    (pkg / "pkg").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "pkg" / "__init__.py").write_text("from mailbot.pkg.main import run\n")
    (pkg / "pkg" / "main.py").write_text("from mailbot.pkg.part import x\n")
    (pkg / "pkg" / "part.py").write_text("x = 1\n")
    graph = import_graph(pkg)
    assert graph["mailbot.pkg"] == {"mailbot.pkg.main"}
    assert graph["mailbot.pkg.main"] == {"mailbot.pkg.part"}
    assert find_cycle(graph) is None
    (pkg / "pkg" / "part.py").write_text("from mailbot.pkg import run\n")
    assert find_cycle(import_graph(pkg)) == ["mailbot.pkg", "mailbot.pkg.main", "mailbot.pkg.part", "mailbot.pkg"]
