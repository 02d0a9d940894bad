"""Every shared table is written through its repository in include/psa_erp_sync/ods/: no other
module writes ``audit.change``, resolves ``exceptions.item``, or writes ``staging`` or ``inbox``
with SQL of its own; operators hold no SQL at all (they call domain functions)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "psa_erp_sync"
ODS = PACKAGE / "ods"

# (what a statement writes, the only module that may write it that way)
WRITES = [
    (re.compile(r"INSERT\s+INTO\s+audit\.change\b", re.I), ODS / "audit.py"),
    (re.compile(r"UPDATE\s+exceptions\.item\b", re.I), ODS / "exceptions.py"),
    (re.compile(r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+staging\.", re.I), ODS / "staging.py"),
    (re.compile(r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+inbox\.", re.I), ODS / "inbox.py"),
]
# ods/retention.py ages personal data out of staging and the inbox: the one other writer, by design.
ALSO_ALLOWED = {ODS / "retention.py"}


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_shared_tables_are_written_by_their_repository_only() -> None:
    offending = []
    for path in _sources():
        text = "\n".join(s for _, s in _strings(path))
        for pattern, owner in WRITES:
            if path != owner and path not in ALSO_ALLOWED and pattern.search(text):
                offending.append(
                    f"{path.relative_to(ROOT)}: {pattern.pattern} (use {owner.relative_to(ROOT)})"
                )
    assert not offending, "shared tables written outside their repository:\n" + "\n".join(offending)


# A schema one package writes keeps its repository in that package (docs/architecture.md, ods/ row).
OWNED = [
    (re.compile(r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+ledger\.", re.I), PACKAGE / "posting"),
    (re.compile(r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+master\.", re.I), PACKAGE / "masterdata"),
    (re.compile(r"(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+forecast\.", re.I), PACKAGE / "forecast"),
]


def test_single_writer_schemas_are_written_by_their_package_only() -> None:
    offending = []
    for path in _sources():
        text = "\n".join(s for _, s in _strings(path))
        for pattern, owner in OWNED:
            if owner not in path.parents and pattern.search(text):
                offending.append(
                    f"{path.relative_to(ROOT)}: {pattern.pattern} (call {owner.relative_to(ROOT)})"
                )
    assert not offending, "a schema written outside the package that owns it:\n" + "\n".join(offending)


def test_operators_hold_no_sql() -> None:
    sql = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\s", re.I)
    offending = [
        f"{path.relative_to(ROOT)}:{line}: {text.strip()[:60]}"
        for path in sorted((PACKAGE / "operators").glob("*.py"))
        for line, text in _strings(path)
        if sql.match(text)
    ]
    assert not offending, "SQL in an operator:\n" + "\n".join(offending)


def test_the_check_sees_a_hand_written_audit_insert(tmp_path: Path) -> None:
    rogue = tmp_path / "rogue.py"
    rogue.write_text('SQL = "INSERT INTO audit.change (actor) VALUES (%s)"\n')
    text = "\n".join(s for _, s in _strings(rogue))
    assert WRITES[0][0].search(text)
