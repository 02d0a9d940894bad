"""docs/architecture.md stays true: its layers picture is the one the import graph draws today. And the
docs (docs/*.md, README.md) speak of this repository: every file they name by repository path exists
(tests by name too), package files are named by that path, and every module they name exists."""

from __future__ import annotations

import ast
import glob
import re
from pathlib import Path

from devtools import layers_picture

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])
# A backticked text that starts with one of the repository's top folders is a repository path.
REPO_PATH = re.compile(r"`((?:include|tests|devtools|config|dags|simulators|docs|plugins|compose)/[^`\s]*)`")


def test_the_layers_picture_is_drawn_from_todays_imports() -> None:
    doc = layers_picture.DOC.read_text()
    assert layers_picture.BEGIN in doc and layers_picture.END in doc
    assert layers_picture.render(doc) == doc, (
        "docs/architecture.md's layers picture is stale: run .venv/bin/python -m devtools.layers_picture"
    )


def test_the_picture_has_every_package_and_every_layer() -> None:
    picture = layers_picture.mermaid()
    for text, members in layers_picture.contract_layers():
        assert text in picture
        for name in members:
            assert f'n_{name}["{name}"]' in picture
    # an import the code really has, with its count: the DAG files import their flows
    assert re.search(r"n_dags -- \d+ --> n_flows", picture)
    assert layers_picture.UNLAYERED not in picture, "a package of include/psa_erp_sync is in no layer"


def test_a_stale_picture_is_caught() -> None:
    doc = layers_picture.DOC.read_text()
    stale = doc.replace("n_dags -- ", "n_dags -- 999", 1)
    assert layers_picture.render(stale) != stale


def _as_glob(path: str) -> str:
    """`NNNN_*.sql`, `YYYY-MM-DD.json`, `<domain>.py` and `{a,b}` name patterns."""
    path = path.rstrip(".,;:")
    path = path.replace("NNNN", "[0-9][0-9][0-9][0-9]").replace("YYYY-MM-DD", "*")
    path = re.sub(r"<[^>]+>", "*", path).replace("...", "*")
    return path


def _exists(path: str) -> bool:
    if "::" in path:  # `tests/x/test_y.py::test_z` (or `::test_z_...`): the test is in the file
        file, test = path.split("::", 1)
        test = test.removesuffix("...").split("[")[0]
        target = ROOT / file
        return target.is_file() and f"def {test}" in target.read_text()
    pattern = _as_glob(path)
    alternatives = re.fullmatch(r"(.*)\{([^}]*)\}(.*)", pattern)
    if alternatives:
        head, options, tail = alternatives.groups()
        return all(_exists(head + option + tail) for option in options.split(","))
    return bool(glob.glob(str(ROOT / pattern)))


def test_every_repository_path_in_the_docs_exists() -> None:
    missing = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            missing += [
                f"{doc.relative_to(ROOT)}:{number}: {p}" for p in REPO_PATH.findall(line) if not _exists(p)
            ]
    assert not missing, "the docs name files that do not exist:\n" + "\n".join(missing)


PACKAGE_DIRS = sorted(p.name for p in (ROOT / "include" / "psa_erp_sync").iterdir() if p.is_dir())
# `posting/ledger.py` or `psa_erp_sync/posting/ledger.py`: a file named from inside the package.
PACKAGE_RELATIVE = re.compile(
    r"`((?:(?:psa_erp_sync|include)/)?(?:" + "|".join(PACKAGE_DIRS) + r")/[^`\s]*)`"
)


def test_the_docs_name_package_files_by_repository_path() -> None:
    """`include/psa_erp_sync/posting/ledger.py`, not `posting/ledger.py` (which folder is that?)."""
    found = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            found += [
                f"{doc.relative_to(ROOT)}:{number}: {p}"
                for p in PACKAGE_RELATIVE.findall(line)
                if not p.startswith("include/psa_erp_sync/")
            ]
    assert not found, "name these by their repository path (include/psa_erp_sync/...):\n" + "\n".join(found)


def test_the_docs_name_no_absolute_or_machine_paths() -> None:
    found = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            if re.search(r"/work/|/home/|/Users/|[A-Z]:\\\\", line):
                found.append(f"{doc.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert not found, "\n".join(found)


def test_the_path_check_can_fail() -> None:
    assert _exists("include/psa_erp_sync/ods/migrations/NNNN_*.sql")
    assert _exists("include/psa_erp_sync/{extract,posting}")
    assert not _exists("include/psa_erp_sync/{extract,nonexistent}")
    assert not _exists("include/psa_erp_sync/ledger.py")
    assert _exists("tests/test_layers.py::test_the_import_contracts_hold")
    assert _exists("tests/test_layers.py::test_the_import_...")
    assert not _exists("tests/test_layers.py::test_that_was_renamed")


DOTTED = re.compile(r"`((?:psa_erp_sync|devtools|simulators)(?:\.[A-Za-z_]\w*)+)`")


def _module_file(parts: list[str]) -> Path | None:
    base = ROOT / "include" if parts[0] == "psa_erp_sync" else ROOT
    path = base.joinpath(*parts)
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _defined_names(body: list[ast.stmt]) -> dict[str, list[ast.stmt]]:
    """Names a module or class body binds (def, class, assignment, import), with a class's body."""
    names: dict[str, list[ast.stmt]] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = []
        elif isinstance(node, ast.ClassDef):
            names[node.name] = node.body
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update({(a.asname or a.name).split(".")[0]: [] for a in node.names})
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update({t.id: [] for t in targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.If | ast.Try):
            names.update(_defined_names(node.body))
    return names


def _resolves(dotted: str) -> bool:
    """`psa_erp_sync.posting.service.post_record_type`: the longest module prefix that is a file of
    the repository, then names defined in it (read with ast: nothing is imported)."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        path = _module_file(parts[:i])
        if path is None:
            continue
        body: list[ast.stmt] = ast.parse(path.read_text()).body
        for name in parts[i:]:
            names = _defined_names(body)
            if name not in names:
                return False
            body = names[name]
        return True
    return False


def _a_name_the_code_uses(dotted: str) -> bool:
    """An asset or lock name such as `psa_erp_sync.inbox.time_expense` is a string in the code."""
    quoted = (f'"{dotted}"', f"'{dotted}'")
    sources = [*(ROOT / "include").rglob("*.py"), *(ROOT / "dags").glob("*.py")]
    return any(q in path.read_text() for path in sources for q in quoted)


def test_every_module_the_docs_name_exists() -> None:
    stale = []
    for doc in DOCS:
        for number, line in enumerate(doc.read_text().splitlines(), 1):
            stale += [
                f"{doc.relative_to(ROOT)}:{number}: {d}"
                for d in DOTTED.findall(line)
                if not _resolves(d) and not _a_name_the_code_uses(d)
            ]
    assert not stale, "the docs name modules or attributes that do not exist:\n" + "\n".join(stale)


def test_the_module_check_can_fail() -> None:
    assert _resolves("psa_erp_sync.posting.service.post_record_type")
    assert not _resolves("psa_erp_sync.posting.service.no_such_function")
    assert not _resolves("psa_erp_sync.no_such_package")
    assert _a_name_the_code_uses("psa_erp_sync.inbox.time_expense")
