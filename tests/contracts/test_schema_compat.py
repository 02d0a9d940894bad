"""The published v1 JSON Schemas match the models, and the models do not break them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools import contracts_export as export
from psa_erp_sync.contracts import compat, v1

SCHEMA_DIR = export.SCHEMA_ROOT / v1.VERSION


def test_exported_files_equal_the_models() -> None:
    """A model change without ``python -m devtools.contracts_export`` fails here."""
    assert export.differences(SCHEMA_DIR, export.expected_files()) == []


@pytest.mark.parametrize("model", v1.MODELS, ids=lambda m: m.__name__)
def test_model_does_not_break_its_published_schema(model: type[v1.CanonicalModel]) -> None:
    published = SCHEMA_DIR / f"{model.__name__}.json"
    assert published.is_file(), f"{model.__name__} has no published schema"
    breaks = compat.breaking_changes(json.loads(published.read_text()), export.schema_of(model))
    assert breaks == [], "breaking change to a published v1 contract; add v2 instead:\n" + "\n".join(
        map(str, breaks)
    )


def test_every_model_is_versioned_strict_closed_and_frozen() -> None:
    for model in v1.MODELS:
        assert model.model_fields["contract_version"].default == "v1"
        assert model.model_config.get("strict") is True
        assert model.model_config.get("extra") == "forbid"
        assert model.model_config.get("frozen") is True


def test_check_mode_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main(["--check", "--dir", str(SCHEMA_DIR)]) == 0
    assert export.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "missing" in capsys.readouterr().out
    assert export.main(["--dir", str(tmp_path)]) == 0
    assert export.main(["--check", "--dir", str(tmp_path)]) == 0
    (tmp_path / "TimeEntry.json").write_text("{}\n")
    assert export.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().out
    assert export.main(["--dir", str(tmp_path), "--allow-breaking"]) == 0
    (tmp_path / "Gone.json").write_text("{}\n")
    assert export.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "unexpected" in capsys.readouterr().out


def test_output_is_stable(tmp_path: Path) -> None:
    export.main(["--dir", str(tmp_path)])
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    export.main(["--dir", str(tmp_path)])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first
    text = first["TimeEntry.json"].decode()
    assert text.endswith("}\n")
    assert json.loads(text)["$id"] == "urn:psa-erp-sync:contracts:v1:TimeEntry"


def test_export_refuses_to_overwrite_with_a_breaking_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export.main(["--dir", str(tmp_path)])
    published = json.loads((tmp_path / "TimeEntry.json").read_text())
    published["properties"]["legacy_field"] = {"type": "string"}  # the model "removed" it
    (tmp_path / "TimeEntry.json").write_text(export.render(published))
    assert export.main(["--dir", str(tmp_path)]) == 2
    assert "property_removed" in capsys.readouterr().out
    assert export.main(["--dir", str(tmp_path), "--allow-breaking"]) == 0
    assert export.main(["--check", "--dir", str(tmp_path)]) == 0
