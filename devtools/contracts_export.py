"""Export the JSON Schema of every v1 contract: ``python -m devtools.contracts_export [--check]``.

Writes ``schemas/v1/<Model>.json`` next to this module, one file per model, with sorted keys and
a trailing newline so the output is byte-stable and reviewable. ``--check`` writes nothing and
exits 1 when a file is missing, stale or unexpected.

A published version only grows: before overwriting a file, the export compares the new schema
with the published one (:mod:`psa_erp_sync.contracts.compat`) and refuses breaking changes
(exit 2). Such a change needs a new contract version; ``--allow-breaking`` exists for the
deliberate repair of a schema nobody consumes yet.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from psa_erp_sync.contracts import compat, v1

SCHEMA_ROOT = Path(__file__).resolve().parents[1] / "include" / "psa_erp_sync" / "contracts" / "schemas"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_of(model: type[BaseModel], version: str = v1.VERSION) -> dict[str, Any]:
    """The published form of a model's JSON Schema (validation mode, with ``$id`` and dialect)."""
    schema = model.model_json_schema(mode="validation")
    schema["$schema"] = JSON_SCHEMA_DIALECT
    schema["$id"] = f"urn:psa-erp-sync:contracts:{version}:{model.__name__}"
    return schema


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files(
    models: Iterable[type[BaseModel]] = v1.MODELS, version: str = v1.VERSION
) -> dict[str, str]:
    """File name -> exact content of every schema file of ``version``."""
    return {f"{m.__name__}.json": render(schema_of(m, version)) for m in models}


def differences(directory: Path, expected: dict[str, str]) -> list[str]:
    """Human-readable list of files that are missing, stale or unexpected in ``directory``."""
    problems: list[str] = []
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    for name, content in sorted(expected.items()):
        path = directory / name
        if name not in present:
            problems.append(f"missing: {path}")
        elif path.read_text(encoding="utf-8") != content:
            problems.append(f"stale: {path}")
    problems.extend(f"unexpected: {directory / name}" for name in sorted(present - expected.keys()))
    return problems


def published_breaks(directory: Path, expected: dict[str, str]) -> dict[str, list[compat.Break]]:
    """Breaking changes of each model against its published file (models without a file: none)."""
    result: dict[str, list[compat.Break]] = {}
    for name, content in sorted(expected.items()):
        path = directory / name
        if not path.is_file():
            continue
        breaks = compat.breaking_changes(json.loads(path.read_text(encoding="utf-8")), json.loads(content))
        if breaks:
            result[name] = breaks
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    for name in sorted(present - expected.keys()):
        result[name] = [compat.Break("property_removed", "", "the model is no longer published")]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when files differ")
    parser.add_argument("--allow-breaking", action="store_true", help="overwrite even with breaking changes")
    parser.add_argument("--dir", type=Path, default=SCHEMA_ROOT / v1.VERSION, help="output directory")
    args = parser.parse_args(argv)
    out = sys.stdout
    expected = expected_files()
    directory: Path = args.dir

    if args.check:
        problems = differences(directory, expected)
        for problem in problems:
            out.write(problem + "\n")
        if problems:
            out.write("schemas differ from the models; run: python -m devtools.contracts_export\n")
        return 1 if problems else 0

    breaks = published_breaks(directory, expected)
    if breaks and not args.allow_breaking:
        for name, found in breaks.items():
            for item in found:
                out.write(f"{name}: {item}\n")
        out.write(f"refusing to break published {v1.VERSION} schemas; add a new contract version instead\n")
        return 2
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, content in sorted(expected.items()):
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
            written += 1
    if args.allow_breaking:
        for name in sorted({p.name for p in directory.glob("*.json")} - expected.keys()):
            (directory / name).unlink()
    out.write(f"{written} of {len(expected)} schema files written to {directory}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
