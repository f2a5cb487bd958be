"""The package's layout rules: torch-free rooms stay torch-free, no private name crosses a module,
no module grows past MAX_LINES."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import xdetox

SRC = Path(xdetox.__file__).parent

MAX_LINES = 400

# Modules allowed past MAX_LINES for now, each being split elsewhere (none at present).
KNOWN_LONG_MODULES: set[str] = set()


def test_report_store_and_specs_import_without_torch():
    code = ("import sys, xdetox.report, xdetox.store, xdetox.specs; "
            "assert 'torch' not in sys.modules, 'torch loaded'; "
            "assert 'transformers' not in sys.modules, 'transformers loaded'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize(("module", "absent"), [
    ("xdetox.scorers.registry", ("torch", "transformers", "sklearn")),  # scorers load their libraries when built
    ("xdetox.analysis", ("torch", "transformers")),
    ("xdetox.scorers.augment", ("torch", "transformers", "sklearn")),  # the training set is plain data
])
def test_registry_and_analysis_import_without_torch(module, absent):
    code = (f"import sys, {module}; "
            f"loaded = [m for m in {absent!r} if m in sys.modules]; "
            "assert not loaded, f'loaded: {loaded}'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.parametrize(("module", "absent"), [
    ("xdetox.cli", ("torch", "transformers")),  # parsing and dispatching load no model code
    ("xdetox.grid.run", ("torch", "transformers")),
    ("xdetox.scorer_checks", ("torch", "transformers", "sklearn")),  # the scorer is what loads them
])
def test_the_command_line_and_its_rooms_import_without_model_code(module, absent):
    test_registry_and_analysis_import_without_torch(module, absent)


def test_no_module_is_longer_than_max_lines():
    lengths = {path.relative_to(SRC).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
               for path in SRC.rglob("*.py")}
    too_long = {name: n for name, n in lengths.items() if n > MAX_LINES and name not in KNOWN_LONG_MODULES}
    assert too_long == {}
    assert KNOWN_LONG_MODULES <= set(lengths), "an exception names a module that no longer exists"


def private_imports(path: Path) -> list[tuple[str, str, str]]:
    """(file, module, name) for each ``_private`` name taken from another xdetox module:
    ``from xdetox.x import _y``, and ``x._y`` where ``x`` was imported from xdetox."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = path.relative_to(SRC).as_posix()
    found, imported = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "xdetox":
            for alias in node.names:
                if alias.name.startswith("_"):
                    found.append((here, node.module, alias.name))
                imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "xdetox":
                    imported[alias.asname or alias.name.split(".")[0]] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in imported
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append((here, imported[node.value.id], node.attr))
    return found


def test_the_private_name_check_finds_both_forms(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    (tmp_path / "a.py").write_text("from xdetox.grid import Plan, _hidden\nfrom xdetox import grid\n"
                                   "grid._other()\nself._fine = 1\n")
    assert sorted(private_imports(tmp_path / "a.py")) == [
        ("a.py", "xdetox.grid", "_hidden"), ("a.py", "xdetox.grid", "_other")]


def test_no_module_imports_a_private_name_of_another_module():
    """No exceptions: a name another module needs is public (``xdetox._io`` holds the shared helpers)."""
    found = {hit for path in sorted(SRC.rglob("*.py")) for hit in private_imports(path)}
    assert found == set()


def test_grid_config_and_specs_import_without_torch():
    for module in ("xdetox.grid.config", "xdetox.grid.options", "xdetox.grid.evaluate", "xdetox.specs",
                   "xdetox._io"):  # each in a fresh interpreter
        code = f"import sys, {module}; print(sorted({{'torch', 'transformers'}} & set(sys.modules)))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]", f"{module} loads {out.stdout.strip()}"


def import_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the xdetox modules it imports anywhere in its body (function-level imports included);
    a module's own parent packages are left out (importing ``a.b`` always runs ``a`` first)."""
    modules = {}
    for path in src.rglob("*.py"):
        parts = path.relative_to(src.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "xdetox":
                targets |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import one another, directly or through others (strongly connected)."""
    reach = {name: set() for name in graph}
    for name in graph:
        todo = list(graph[name])
        while todo:
            other = todo.pop()
            if other not in reach[name]:
                reach[name].add(other)
                todo.extend(graph[other])
    groups = {frozenset([name] + [o for o in reach[name] if name in reach[o]]) for name in graph if name in reach[name]}
    return [set(group) for group in groups]


KNOWN_CYCLES: list[set[str]] = []


def test_no_import_cycles():
    assert [c for c in import_cycles(import_graph(SRC)) if c not in KNOWN_CYCLES] == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "xdetox"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from xdetox.b import f\n")
    (pkg / "b.py").write_text("def f():\n    from xdetox import a\n")
    (pkg / "c.py").write_text("import xdetox.a\n")
    assert import_cycles(import_graph(pkg)) == [{"xdetox.a", "xdetox.b"}]


def test_the_scorers_package_exports_its_rooms_names():
    """Each name ``xdetox.scorers`` offers is the one in its room, even once every room is imported
    (a room named like one of the names would shadow it)."""
    import importlib

    import xdetox.scorers as scorers

    for room, names in scorers.ROOMS.items():
        module = importlib.import_module(f"xdetox.scorers.{room}")
        for name in names:
            assert getattr(scorers, name) is getattr(module, name), name
    assert sorted(scorers.__all__) == sorted(name for names in scorers.ROOMS.values() for name in names)


def _runs_sql(tree: ast.AST) -> list[str]:
    """Where a module imports sqlite3, or calls ``.execute``/``.executemany``/``.executescript``/``read_sql*``
    with text as its first argument (SQL: ``grid.execute(plan, ...)`` is not), as ``line: call``."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{node.lineno}: import {n}" for n in names if n and n.split(".")[0] == "sqlite3"]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            name = node.func.attr
            sql_call = name in ("execute", "executemany", "executescript") or name.startswith("read_sql")
            if sql_call and node.args and isinstance(node.args[0], ast.Constant | ast.JoinedStr | ast.BinOp):
                found.append(f"{node.lineno}: .{node.func.attr}(...)")
    return found


def test_no_sql_outside_the_store_package():
    store = SRC / "store"
    offenders = {str(path.relative_to(SRC)): calls for path in sorted(SRC.rglob("*.py"))
                 if store not in path.parents and (calls := _runs_sql(ast.parse(path.read_text())))}
    assert offenders == {}
    assert _runs_sql(ast.parse((store / "reads.py").read_text())), "the check finds the store's own queries"
