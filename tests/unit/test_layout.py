"""The shape of the code: no cycles between files, small files and functions,
and the client side free of compiled code (docs/architecture.md).

Python imports are read with ``ast`` (every import, also inside functions:
a deferred import that closes a circle is still a circle).  C calls between
files are read from the object files: file A depends on file B when A's
object needs a symbol B's defines (``nm``), which is every call and every
shared variable, and nothing else.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "router"
NATIVE = PKG / "native"
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 120


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert cycles({"a": ["b"], "b": []}) == []


# ---- Python ---------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def python_imports() -> dict[str, set[str]]:
    """Module -> the project's modules it imports."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                # The longest project module the name starts with.
                while n and n not in files:
                    n = n.rpartition(".")[0]
                if n and n != mod:
                    deps.add(n)
        graph[mod] = deps
    return graph


def test_python_imports_have_no_cycle() -> None:
    graph = python_imports()
    assert "router.config.model" in graph and "router.app" in graph
    assert cycles(graph) == []


@pytest.mark.parametrize("module", ["router.ctl", "router.config", "router.conntrack_text",
                                    "router.state"])
def test_client_side_imports_nothing_compiled(module: str) -> None:
    """routerctl, the config and the formats it prints run without the
    compiled data plane (a fresh interpreter, so nothing is loaded yet)."""
    code = (f"import sys, {module}\n"
            "bad = [m for m in sys.modules if m.endswith('._rt') or m == 'router.datapath'"
            " or m == '_cffi_backend']\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_routerctl_runs_without_the_compiled_library(tmp_path: Path) -> None:
    """The command itself, with the compiled module made unimportable."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text("import sys\n"
                       "class Block:\n"
                       "    def find_spec(self, name, path=None, target=None):\n"
                       "        if name.endswith('._rt') or name == '_cffi_backend':\n"
                       "            raise ImportError('blocked: ' + name)\n"
                       "sys.meta_path.insert(0, Block())\n")
    main = "import sys, router.ctl; sys.exit(router.ctl.main())"
    r = subprocess.run([sys.executable, "-c", main, "-S", str(tmp_path / "none.sock"), "status"],
                       cwd=ROOT, capture_output=True, text=True,
                       env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert "blocked" not in r.stderr, r.stderr
    assert r.returncode != 0 and "none.sock" in r.stderr  # it ran, and found no router


# ---- C ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def c_objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("gcc") is None or shutil.which("nm") is None:
        pytest.fail("gcc and nm (binutils) are needed to read the C call graph")
    out = tmp_path_factory.mktemp("objs")
    objs = {}
    for c in sorted(NATIVE.glob("*.c")):
        o = out / f"{c.stem}.o"
        subprocess.run(["gcc", "-std=gnu11", "-O0", "-c", str(c), "-o", str(o)], check=True)
        objs[c.name] = o
    return objs


def c_calls(objs: Mapping[str, Path]) -> dict[str, set[str]]:
    """C file -> the C files whose symbols it uses."""
    defined: dict[str, str] = {}
    used: dict[str, set[str]] = {}
    for name, o in objs.items():
        used[name] = set()
        for line in subprocess.run(["nm", str(o)], check=True, capture_output=True,
                                   text=True).stdout.splitlines():
            f = line.split()
            if len(f) == 3 and f[1] in "TDBR":
                defined[f[2]] = name
            elif len(f) == 2 and f[0] == "U":
                used[name].add(f[1])
    return {n: {defined[s] for s in u if s in defined} - {n} for n, u in used.items()}


def test_c_files_call_each_other_without_a_cycle(c_objects: dict[str, Path]) -> None:
    graph = c_calls(c_objects)
    assert "dp_batch.c" in graph["io.c"]  # the graph is read at all
    assert cycles(graph) == []


# ---- sizes ------------------------------------------------------------------


def _sources() -> list[Path]:
    out = [p for d in ("router", "tests", "bench") for p in (ROOT / d).rglob("*.py")]
    out += [p for d in ("router/native", "bench", "tests/fuzz")
            for ext in ("*.c", "*.h") for p in (ROOT / d).glob(ext)]
    return sorted(out)


def test_no_source_file_is_too_long() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _sources()
            if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES}
    assert long == {}


def _c_functions(text: str) -> Iterable[tuple[str, int]]:
    """(name, lines) of each function: the project's C style opens a
    function's body with '{' alone at column 0 and closes it with '}'."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line == "{":
            j = next(k for k in range(i + 1, len(lines)) if lines[k] == "}")
            head = next((lines[k] for k in range(i - 1, -1, -1) if "(" in lines[k]), "?")
            yield head.split("(")[0].split()[-1].lstrip("*"), j - i + 1


def test_no_function_is_too_long() -> None:
    long = {}
    for p in _sources():
        text = p.read_text()
        if p.suffix == ".py":
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        long[f"{p.relative_to(ROOT)}:{node.name}"] = n
        else:
            for name, n in _c_functions(text):
                if n > MAX_FUNCTION_LINES:
                    long[f"{p.relative_to(ROOT)}:{name}"] = n
    assert long == {}


# ---- packaging --------------------------------------------------------------


def test_every_package_is_installed_and_shipped() -> None:
    """A new folder of the code must reach pip's packages and the
    container's build context, or an installed router misses it."""
    import tomllib

    packages = {_module_name(p.parent / "__init__.py") for p in PKG.rglob("__init__.py")}
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())
                 ["tool"]["setuptools"]["packages"])
    assert listed == packages
    context = (ROOT / "scripts" / "container.sh").read_text()
    for pkg in packages - {"router"}:
        folder = pkg.replace(".", "/")
        assert f"cp {folder}/" in context, f"scripts/container.sh does not copy {folder}"
