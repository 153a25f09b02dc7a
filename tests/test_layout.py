"""The library's layout: packages by job, imports running one way, down the flow, no circles."""
import ast
import re
from pathlib import Path

from conftest import ROOT

LIBRARY = ROOT / "captioner"
# Lowest first: a package may import itself and those before it, never one after it.
LAYERS = ["data", "vision", "decoders", "decoding", "model_dirs", "evaluation", "explain", "trust", "training", "batch"]
TOP = {"__init__", "__main__", "api", "cli_errors"}   # the API and the CLI, above every package
APP_LEVEL = {"app", "pages", "streamlit_app", "training_scripts", "benchmarks", "tests"}


def modules() -> dict[str, Path]:
    """Every module of the library by dotted name (captioner.data.images, ...)."""
    found = {}
    for path in LIBRARY.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path, name: str) -> set[str]:
    """The captioner modules a module imports, at any depth of its code (lazy imports too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "captioner"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != "captioner":
                continue
            out.add(target)
            out |= {f"{target}.{a.name}" for a in node.names}  # `from captioner.data import text`
    known = modules()
    return {m for m in out if m in known and m != name}


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return LAYERS.index(parts[1])
    return len(LAYERS)   # captioner itself, api, cli_errors, __main__


def test_every_module_sits_in_a_package_or_is_the_api_or_cli():
    for name, path in modules().items():
        parts = name.split(".")
        if path.parent == LIBRARY:
            assert path.stem in TOP, f"{path}: put it in one of the packages {LAYERS}"
        else:
            assert len(parts) >= 2 and parts[1] in LAYERS, f"{path}: {parts[1]} is not in LAYERS"


def test_each_package_says_what_it_holds_and_may_import():
    for package in LAYERS:
        doc = ast.get_docstring(ast.parse((LIBRARY / package / "__init__.py").read_text()))
        assert doc and "import" in doc.lower(), f"captioner/{package}/__init__.py needs a docstring"


def test_imports_run_down_the_layers():
    wrong = []
    for name, path in modules().items():
        for target in imported(path, name):
            if layer(target) > layer(name):
                wrong.append(f"{name} imports {target}")
    assert not wrong, "imports against the flow (LAYERS in this test):\n" + "\n".join(sorted(wrong))


def test_no_import_cycles_between_modules():
    graph = {name: imported(path, name) for name, path in modules().items()}
    # A package's __init__ re-exporting the API is where `from captioner import Captioner` comes
    # from; every submodule passes through it, so it is left out of the graph.
    graph.pop("captioner")
    for targets in graph.values():
        targets.discard("captioner")
    seen, on_stack, cycles = set(), [], []

    def visit(node):
        if node in on_stack:
            cycles.append(on_stack[on_stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        on_stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        on_stack.pop()

    for node in sorted(graph):
        visit(node)
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_the_layer_check_sees_a_wrong_import(tmp_path):
    """The check itself: a data module importing training is caught, lazy or not."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from captioner.training.loop import train\n")
    assert imported(bad, "captioner.data.bad") == {"captioner.training.loop"}
    assert layer("captioner.training.loop") > layer("captioner.data.bad")


def test_the_library_never_imports_the_app():
    for name, path in modules().items():
        text = path.read_text()
        for top in APP_LEVEL:
            assert not re.search(rf"^\s*(import|from)\s+{top}\b", text, re.M), f"{path} imports {top}"


def test_pyproject_packages_every_library_package():
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(captioner(?:\.\w+)?)"', text.split("packages =", 1)[1].split("]", 1)[0]))
    wanted = {"captioner", "captioner.trained"} | {f"captioner.{p}" for p in LAYERS}
    assert listed == wanted


def test_the_top_level_is_what_the_project_card_names():
    tracked = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    expected = {"streamlit_app.py", "pages", "app", "captioner", "trained", "training_scripts", "tests",
                "requirements.txt", "requirements-serve.txt", "README.md", "Makefile", "pyproject.toml", "pytest.ini", "benchmarks", "docs"}
    untracked_ok = {"build", "__pycache__"}
    assert tracked - untracked_ok - {p for p in tracked if p.endswith(".egg-info")} <= expected, tracked - expected
