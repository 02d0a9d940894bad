"""Find the changes between a published JSON Schema and a current one that would break consumers.

A published contract version may only grow by optional fields. These are breaking:

``property_removed``  a property of the published schema is gone
``newly_required``    a property is required now that was not (new or formerly optional)
``type_changed``      the set of JSON types (with string ``format``) of a property differs
``enum_narrowed``     an allowed value (``enum``/``const``) is gone, or a free value became an enum

Any of these needs a new contract version (``v2``), not an edit of ``v1``. The comparison walks
nested objects, arrays and ``anyOf``/``oneOf`` unions, resolving local ``$ref`` into ``$defs``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

BreakKind = Literal["property_removed", "newly_required", "type_changed", "enum_narrowed"]


@dataclass(frozen=True, order=True)
class Break:
    """One breaking difference, at a JSON-pointer-like ``path`` (``/lines[]/amount_minor``)."""

    kind: BreakKind
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} at {self.path or '/'}: {self.detail}"


def breaking_changes(published: dict[str, Any], current: dict[str, Any]) -> list[Break]:
    """Every change from ``published`` to ``current`` that breaks a consumer, sorted."""
    walker = _Walker(published.get("$defs", {}), current.get("$defs", {}))
    walker.compare(published, current, "")
    return sorted(set(walker.breaks))


class _Walker:
    def __init__(self, old_defs: dict[str, Any], new_defs: dict[str, Any]) -> None:
        self.old_defs = old_defs
        self.new_defs = new_defs
        self.breaks: list[Break] = []
        self._seen: set[tuple[int, int, str]] = set()

    def compare(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old = _resolve(old, self.old_defs)
        new = _resolve(new, self.new_defs)
        key = (id(old), id(new), path)
        if key in self._seen:  # recursive schemas
            return
        self._seen.add(key)

        old_types = _types(old, self.old_defs)
        new_types = _types(new, self.new_defs)
        if old_types != new_types and "any" not in new_types:
            self.breaks.append(Break("type_changed", path, f"{sorted(old_types)} -> {sorted(new_types)}"))

        old_enum = _enum(old, self.old_defs)
        new_enum = _enum(new, self.new_defs)
        if new_enum is not None:
            if old_enum is None:
                self.breaks.append(Break("enum_narrowed", path, f"free value -> one of {sorted(new_enum)}"))
            elif missing := old_enum - new_enum:
                self.breaks.append(Break("enum_narrowed", path, f"no longer allowed: {sorted(missing)}"))

        old_obj = _single_branch(old, self.old_defs, "object")
        new_obj = _single_branch(new, self.new_defs, "object")
        if old_obj is not None and new_obj is not None:
            self._compare_objects(old_obj, new_obj, path)

        old_arr = _single_branch(old, self.old_defs, "array")
        new_arr = _single_branch(new, self.new_defs, "array")
        if old_arr is not None and new_arr is not None:
            old_items, new_items = old_arr.get("items"), new_arr.get("items")
            if isinstance(old_items, dict) and isinstance(new_items, dict):
                self.compare(old_items, new_items, path + "[]")

    def _compare_objects(self, old: dict[str, Any], new: dict[str, Any], path: str) -> None:
        old_props: dict[str, Any] = old.get("properties", {})
        new_props: dict[str, Any] = new.get("properties", {})
        old_required = set(old.get("required", []))
        new_required = set(new.get("required", []))
        for name in sorted(old_props.keys() - new_props.keys()):
            self.breaks.append(Break("property_removed", f"{path}/{name}", "property removed"))
        for name in sorted(new_required - old_required):
            detail = "new required property" if name not in old_props else "optional property became required"
            self.breaks.append(Break("newly_required", f"{path}/{name}", detail))
        for name in sorted(old_props.keys() & new_props.keys()):
            self.compare(old_props[name], new_props[name], f"{path}/{name}")
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, dict) and isinstance(new_extra, dict):
            self.compare(old_extra, new_extra, f"{path}/*")


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    hops = 0
    while "$ref" in schema and hops < 32:
        ref = schema["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#/$defs/"):
            raise ValueError(f"only local $defs references are supported, not {ref!r}")
        target = defs[ref.removeprefix("#/$defs/")]
        # sibling keywords next to $ref (e.g. a description) do not change the type
        schema = target
        hops += 1
    return schema


def _branches(schema: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    for keyword in ("anyOf", "oneOf"):
        if keyword in schema:
            out: list[dict[str, Any]] = []
            for branch in schema[keyword]:
                out.extend(_branches(_resolve(branch, defs), defs))
            return out
    return [schema]


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _types(schema: dict[str, Any], defs: dict[str, Any]) -> set[str]:
    """JSON types a schema admits; strings carry their ``format`` (``string:date``)."""
    found: set[str] = set()
    for branch in _branches(schema, defs):
        declared = branch.get("type")
        if declared is None and "const" in branch:
            names = [_json_type(branch["const"])]
        elif declared is None and "enum" in branch:
            names = sorted({_json_type(v) for v in branch["enum"]})
        elif declared is None:
            names = ["any"]
        else:
            names = [declared] if isinstance(declared, str) else list(declared)
        for name in names:
            fmt = branch.get("format")
            found.add(f"{name}:{fmt}" if name == "string" and fmt else name)
    return found


def _enum(schema: dict[str, Any], defs: dict[str, Any]) -> set[str] | None:
    """Allowed non-null values as canonical JSON, or None when some branch admits any value."""
    allowed: set[str] = set()
    for branch in _branches(schema, defs):
        if branch.get("type") == "null":
            continue
        if "const" in branch:
            allowed.add(json.dumps(branch["const"], sort_keys=True))
        elif "enum" in branch:
            allowed.update(json.dumps(v, sort_keys=True) for v in branch["enum"] if v is not None)
        else:
            return None
    return allowed or None


def _single_branch(schema: dict[str, Any], defs: dict[str, Any], kind: str) -> dict[str, Any] | None:
    matches = [b for b in _branches(schema, defs) if b.get("type") == kind]
    return matches[0] if len(matches) == 1 else None
