"""No hand layout hides from the formatter (issue 17, deliverable 6).

``# fmt: skip`` and ``# fmt: off`` kept code out of ``ruff format``'s hands, which also hid repeated
code from the duplicates check. Every Python file of the checkout is laid out by the formatter.
"""

from __future__ import annotations

import re

from tests.conftest import ROOT

MARKER = re.compile(r"#\s*fmt:\s*(skip|off)\b")
DIRS = ("include", "dags", "plugins", "simulators", "devtools", "tests")


def test_no_python_file_opts_out_of_the_formatter() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for folder in DIRS
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != ROOT / "tests" / "test_format_markers.py"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if MARKER.search(line)
    ]
    assert not found, f"formatter opt-outs (remove them and run `ruff format`): {found}"
