"""The common case's lighter decoder of a time entry (``staged_json.LIGHT_TIME_ENTRY``, issue 16):
its structs are the full decoder's with the pattern checks of a few fields left to
:func:`staged_json.light_patterns_hold`. A text the full decoder refuses must not pass both, and
a text it accepts must decode to the same values (or be declined: the full path then judges it).
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import pytest

from psa_erp_sync.validation import staged_json
from tests.validation.test_hostile import ENTRY

STAMPS: list[Any] = [
    None,
    "2026-11-01T10:00:00Z",
    "2026-11-01T10:00:00.123456+05:30",
    "2026-11-01 10:00:00Z",
    "2026-02-29T10:00:00Z",
    "2026-11-01T24:00:00Z",
    "2026-11-01T10:00:00",
    "2026-11-01T10:00:00Z\n",
    "0000-11-01T10:00:00Z",
    "x",
    5,
]
MONEY: list[Any] = [None, 0, 12.5, -3, "12.50", "1e3", " 1", True, []]
#: (path, values) of every deferred field.
DEFERRED = [
    *[
        ((side, stamp), STAMPS)
        for side in ("user_assignment", "task_assignment")
        for stamp in ("created_at", "updated_at")
    ],
    *[
        ((side, money), MONEY)
        for side in ("user_assignment", "task_assignment")
        for money in ("hourly_rate", "budget")
    ],
    (("timer_started_at",), STAMPS),
    (("billable_rate",), MONEY),
    (("cost_rate",), MONEY),
]
CASES = [(path, value) for path, values in DEFERRED for value in values]


def _with(path: tuple[str, ...], value: Any) -> bytes:
    payload = copy.deepcopy(ENTRY)
    payload.setdefault("user_assignment", {"id": 5})
    payload.setdefault("task_assignment", {"id": 6})
    node = payload
    for name in path[:-1]:
        node = node[name]
    node[path[-1]] = value
    return msgspec.json.encode(payload)


def _light(text: bytes) -> Any:
    """The light decode of ``text`` if it passes the deferred checks; else None."""
    try:
        raw = staged_json.LIGHT_TIME_ENTRY.decode(text)
    except msgspec.ValidationError:
        return None
    return raw if staged_json.light_patterns_hold(raw) else None


@pytest.mark.parametrize(("path", "value"), CASES, ids=[f"{'.'.join(p)}={v!r}" for p, v in CASES])
def test_the_light_decoder_passes_only_what_the_full_one_accepts(path: tuple[str, ...], value: Any) -> None:
    text = _with(path, value)
    staged_json._GOOD_TIMESTAMPS.clear()
    for _ in range(2):  # the second time through the memo of good timestamps
        light = _light(text)
        try:
            full = staged_json._TIME_ENTRY.decode(text)
        except msgspec.ValidationError:
            assert light is None
            continue
        if light is not None:
            assert msgspec.to_builtins(light) == msgspec.to_builtins(full)
        if not isinstance(value, str) or path[-1].endswith("_at"):
            assert light is not None  # only a money string is declined the full decoder accepts


def test_only_the_deferred_fields_are_laxer() -> None:
    """Every other field of the light structs is the full one's: same name, type, default."""
    for full, light in [
        (staged_json._TimeEntryJson, staged_json.LIGHT_TIME_ENTRY.type),
        (staged_json._UserAssignment, staged_json._LIGHT_USER_ASSIGNMENT),
        (staged_json._TaskAssignment, staged_json._LIGHT_TASK_ASSIGNMENT),
    ]:
        deferred = staged_json._DEFERRED.get(full, staged_json._TIME_ENTRY_DEFERRED)
        full_fields, light_fields = msgspec.structs.fields(full), msgspec.structs.fields(light)  # type: ignore[arg-type]
        assert [f.name for f in full_fields] == [f.name for f in light_fields]
        for f, g in zip(full_fields, light_fields, strict=True):
            assert (f.required, f.default) == (g.required, g.default)
            assert g.type == deferred.get(f.name, f.type)
        assert set(deferred) <= {f.name for f in full_fields}
