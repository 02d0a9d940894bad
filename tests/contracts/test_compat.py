"""compat.breaking_changes catches each kind of break and accepts additive optional fields."""

from __future__ import annotations

import copy
from typing import Any

from devtools import contracts_export as export
from psa_erp_sync.contracts import v1
from psa_erp_sync.contracts.compat import Break, breaking_changes


def base() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "status", "amount_minor", "lines"],
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": ["open", "paid", "voided"], "type": "string"},
            "amount_minor": {"type": "integer"},
            "note_ref": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "due": {"type": "string", "format": "date"},
            "lines": {"type": "array", "items": {"$ref": "#/$defs/Line"}},
        },
        "$defs": {
            "Line": {
                "type": "object",
                "required": ["layer", "amount_minor"],
                "properties": {
                    "layer": {"enum": ["actual", "contracted", "pipeline"], "type": "string"},
                    "amount_minor": {"type": "integer"},
                },
            }
        },
    }


def kinds(breaks: list[Break]) -> list[tuple[str, str]]:
    return [(b.kind, b.path) for b in breaks]


def test_identical_schemas_have_no_breaks() -> None:
    assert breaking_changes(base(), base()) == []


def test_additive_optional_field_is_accepted() -> None:
    new = base()
    new["properties"]["region"] = {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None}
    new["$defs"]["Line"]["properties"]["comment_code"] = {"type": "string"}
    assert breaking_changes(base(), new) == []


def test_widened_enum_and_new_description_are_accepted() -> None:
    new = base()
    new["properties"]["status"]["enum"].append("partially_paid")
    new["properties"]["id"]["description"] = "the id"
    assert breaking_changes(base(), new) == []


def test_removed_property() -> None:
    new = base()
    del new["properties"]["note_ref"]
    assert kinds(breaking_changes(base(), new)) == [("property_removed", "/note_ref")]


def test_new_required_property() -> None:
    new = base()
    new["properties"]["region"] = {"type": "string"}
    new["required"].append("region")
    breaks = breaking_changes(base(), new)
    assert kinds(breaks) == [("newly_required", "/region")]
    assert breaks[0].detail == "new required property"


def test_optional_property_becoming_required() -> None:
    new = base()
    new["required"].append("note_ref")
    breaks = breaking_changes(base(), new)
    assert kinds(breaks) == [("newly_required", "/note_ref")]
    assert "became required" in breaks[0].detail


def test_changed_type() -> None:
    new = base()
    new["properties"]["amount_minor"] = {"type": "string"}
    assert kinds(breaking_changes(base(), new)) == [("type_changed", "/amount_minor")]


def test_changed_string_format_is_a_type_change() -> None:
    new = base()
    new["properties"]["due"]["format"] = "date-time"
    assert kinds(breaking_changes(base(), new)) == [("type_changed", "/due")]


def test_nullable_becoming_non_nullable_is_a_type_change() -> None:
    new = base()
    new["properties"]["note_ref"] = {"type": "string"}
    assert kinds(breaking_changes(base(), new)) == [("type_changed", "/note_ref")]


def test_narrowed_enum() -> None:
    new = base()
    new["properties"]["status"]["enum"] = ["open", "paid"]
    breaks = breaking_changes(base(), new)
    assert kinds(breaks) == [("enum_narrowed", "/status")]
    assert "voided" in breaks[0].detail


def test_free_string_becoming_an_enum_is_narrowing() -> None:
    new = base()
    new["properties"]["id"] = {"type": "string", "enum": ["a", "b"]}
    assert kinds(breaking_changes(base(), new)) == [("enum_narrowed", "/id")]


def test_breaks_inside_referenced_array_items() -> None:
    new = copy.deepcopy(base())
    new["$defs"]["Line"]["properties"]["layer"]["enum"] = ["actual", "contracted"]
    del new["$defs"]["Line"]["properties"]["amount_minor"]
    assert kinds(breaking_changes(base(), new)) == [
        ("enum_narrowed", "/lines[]/layer"),
        ("property_removed", "/lines[]/amount_minor"),
    ]


def test_catches_a_real_model_change() -> None:
    """The check on a real contract: dropping a TimeEntry column and narrowing a Literal."""
    published = export.schema_of(v1.TimeEntry)
    current = copy.deepcopy(published)
    del current["properties"]["task_ref"]
    current["required"].remove("task_ref")
    snapshot_published = export.schema_of(v1.ForecastSnapshot)
    snapshot_current = copy.deepcopy(snapshot_published)
    snapshot_current["$defs"]["ForecastLine"]["properties"]["layer"]["enum"].remove("pipeline")
    assert kinds(breaking_changes(published, current)) == [("property_removed", "/task_ref")]
    assert kinds(breaking_changes(snapshot_published, snapshot_current)) == [
        ("enum_narrowed", "/lines[]/layer")
    ]
