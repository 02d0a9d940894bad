"""The seam: the msgspec twins are the v1 pydantic contracts, validation writes through them and
posting reads through them (issue 17, deliverable 5).

A v1 field renamed or retyped fails :func:`test_twins_are_the_v1_models` until the twin follows;
a twin that no longer matches the canonical rows breaks validation and the planner at once
(:func:`test_a_renamed_field_breaks_validation_and_posting`). What validation writes is a valid
v1 record (:func:`test_validation_writes_v1_records`).
"""

from __future__ import annotations

import types
import typing
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import msgspec
import psycopg
import pytest
from pydantic import AwareDatetime
from pydantic.fields import FieldInfo

from psa_erp_sync.contracts import records, v1

PAIRS = [(v1.TimeEntry, records.TimeEntry), (v1.ExpenseEntry, records.ExpenseEntry)]


def _base_type(annotation: Any) -> Any:
    """The Python type of a pydantic annotation, constraints and validators peeled off."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return frozenset(_base_type(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return ("literal", typing.get_args(annotation))
    return annotation


def _twin_type(field: msgspec.inspect.Type) -> Any:
    simple = {
        msgspec.inspect.StrType: str,
        msgspec.inspect.IntType: int,
        msgspec.inspect.BoolType: bool,
        msgspec.inspect.DateType: date,
        msgspec.inspect.DateTimeType: datetime,
        msgspec.inspect.DecimalType: Decimal,
        msgspec.inspect.NoneType: type(None),
    }
    if isinstance(field, msgspec.inspect.UnionType):
        return frozenset(_twin_type(t) for t in field.types)
    if isinstance(field, msgspec.inspect.DateTimeType) and field.tz:
        return AwareDatetime
    if isinstance(field, msgspec.inspect.LiteralType):
        return ("literal", tuple(field.values))
    return simple[type(field)]


@pytest.mark.parametrize(("model", "twin"), PAIRS, ids=lambda c: c.__qualname__)
def test_twins_are_the_v1_models(model: type[v1.CanonicalModel], twin: type[msgspec.Struct]) -> None:
    info = msgspec.inspect.type_info(twin)
    assert isinstance(info, msgspec.inspect.StructType)
    twin_fields = {f.name: f for f in info.fields}
    assert list(twin_fields) == list(model.model_fields), "the twin's fields are the contract's, in order"
    for name, field in model.model_fields.items():
        assert isinstance(field, FieldInfo)
        mine = twin_fields[name]
        assert _twin_type(mine.type) == _base_type(field.annotation), name
        assert mine.required == field.is_required(), name
        if not field.is_required():
            assert mine.default == field.default, name


def _time_values() -> dict[str, Any]:
    return {
        "source_system": "psa",
        "source_id": "101",
        "version_hash": "a" * 64,
        "spent_date": date(2026, 11, 2),
        "user_ref": "7",
        "project_ref": "1",
        "task_ref": "10",
        "legal_entity": "LE-US1",
        "hours": Decimal("7.25"),
        "billable": True,
        "bill_rate_minor": 13333,
        "amount_minor": 96664,
        "currency": "USD",
        "approved": True,
        "is_deleted": False,
        "fingerprint": "b" * 64,
        "source_updated_at": datetime(2026, 11, 3, 10, tzinfo=UTC),
    }


def test_a_record_is_built_only_from_the_contracts_fields() -> None:
    record = records.build("time_entry", _time_values())
    assert v1.TimeEntry.model_validate_json(records.encode(record)) == v1.TimeEntry(**_time_values())
    with pytest.raises(msgspec.ValidationError, match="notes"):
        records.build("time_entry", {**_time_values(), "notes": "x"})  # a field the contract lacks
    with pytest.raises(msgspec.ValidationError, match="hours"):
        records.build("time_entry", {k: v for k, v in _time_values().items() if k != "hours"})
    with pytest.raises(msgspec.ValidationError, match="billable"):
        records.build("time_entry", {**_time_values(), "billable": "true"})
    with pytest.raises(msgspec.ValidationError, match="source_updated_at"):
        records.build("time_entry", {**_time_values(), "source_updated_at": datetime(2026, 11, 3)})  # naive
    with pytest.raises(msgspec.ValidationError, match="amount_minor"):
        records.build("time_entry", {**_time_values(), "amount_minor": "96664"})


def test_rows_are_built_at_once_as_one_by_one_with_the_columns_beside() -> None:
    """``build_rows`` (validation's ``COPY`` rows, a chunk in one call) gives each row's
    :func:`records.build` fields in order, then the extra columns as they are, and refuses what
    ``build`` refuses, whichever row of the list holds it."""
    extra = ("fx_rate", "source_read_at")
    read_at = datetime(2026, 11, 3, 11, tzinfo=UTC)
    rows = [
        {**_time_values(), "source_id": str(n), "fx_rate": Decimal("1.1"), "source_read_at": read_at}
        for n in range(3)
    ]
    rows[1].pop("fx_rate")  # an extra column a row lacks is None
    built = records.build_rows("time_entry", rows, extra)
    for row, values in zip(rows, built, strict=True):
        record = records.build("time_entry", {k: row[k] for k in records.FIELDS["time_entry"]})
        assert values == (*msgspec.structs.astuple(record)[1:], row.get("fx_rate"), read_at)
    assert built[1][-2] is None and isinstance(built[0][-2], Decimal)
    for bad, field in (
        ({"notes": "x"}, "notes"),  # a field neither the contract nor extra names
        ({"billable": "true"}, "billable"),
        ({"source_updated_at": datetime(2026, 11, 3)}, "source_updated_at"),  # naive
        ({"amount_minor": "96664"}, "amount_minor"),
    ):
        with pytest.raises(msgspec.ValidationError, match=field):
            records.build_rows("time_entry", [*rows, {**rows[0], **bad}], extra)
    with pytest.raises(msgspec.ValidationError, match="hours"):
        records.build_rows("time_entry", [*rows, {k: v for k, v in rows[0].items() if k != "hours"}], extra)
    with pytest.raises(msgspec.ValidationError, match="fx_rate"):
        records.build_rows("time_entry", rows)  # extra columns not named are refused


def test_a_row_read_back_decodes_as_it_was_written() -> None:
    record = records.build("time_entry", _time_values())
    as_json = records.as_json_row(record)
    assert as_json["hours"] == "7.25" and as_json["spent_date"] == "2026-11-02"
    assert records.from_row("time_entry", {**as_json, "fx_rate": "1"}) == record


@pytest.mark.integration
def test_validation_writes_v1_records(clean_ods: str) -> None:
    from tests.validation.helpers import stage_and_validate_time_entries
    from tests.validation.test_rules import ENTRY

    with psycopg.connect(clean_ods) as conn:
        result = stage_and_validate_time_entries(conn, [ENTRY], run_key="seam-v1", dag_run_id="seam-v1")
        assert result.valid == 1
        (record,) = conn.execute("SELECT canonical.record_v1(c) FROM canonical.time_entry c").fetchone() or (
            None,
        )
    parsed = v1.TimeEntry.model_validate(record)  # the published contract accepts what flows
    assert (parsed.contract_version, parsed.hours, parsed.amount_minor) == ("v1", Decimal("7.25"), 96664)


class _Renamed(msgspec.Struct, kw_only=True, frozen=True):
    """``TimeEntry`` with ``hours`` renamed: what a v1 rename the twin followed would look like."""

    contract_version: typing.Literal["v1"] = "v1"
    source_system: str
    source_id: str
    version_hash: str
    spent_date: date
    user_ref: str
    project_ref: str
    task_ref: str | None
    legal_entity: str
    worked_hours: Decimal
    billable: bool
    bill_rate_minor: int
    amount_minor: int
    currency: str
    approved: bool
    is_deleted: bool = False
    fingerprint: str
    source_updated_at: records.Timestamp


@pytest.mark.integration
def test_a_renamed_field_breaks_validation_and_posting(
    clean_ods: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from psa_erp_sync.config import load_config
    from psa_erp_sync.posting import planner
    from psa_erp_sync.posting.periods import PeriodBook
    from tests.validation.helpers import stage_and_validate_time_entries
    from tests.validation.test_rules import ENTRY

    with psycopg.connect(clean_ods) as conn:
        stage_and_validate_time_entries(conn, [ENTRY], run_key="seam-a", dag_run_id="seam-a")
        conn.commit()
        periods = PeriodBook.from_rows(
            [
                {
                    "externalid": "P",
                    "subsidiary": "LE-US1",
                    "startdate": date(2026, 11, 1),
                    "enddate": date(2026, 11, 30),
                    "closed": "F",
                }
            ]
        )
        monkeypatch.setitem(records.TWINS, "time_entry", _Renamed)  # type: ignore[index]
        monkeypatch.setitem(records.FIELDS, "time_entry", tuple(_Renamed.__struct_fields__[1:]))  # type: ignore[index]
        with pytest.raises(
            (msgspec.ValidationError, KeyError, psycopg.errors.UndefinedColumn), match="worked_hours"
        ):
            stage_and_validate_time_entries(
                conn, [{**ENTRY, "hours": 6}], run_key="seam-b", dag_run_id="seam-b"
            )
        conn.rollback()
        # The planner reads the contract's fields as columns (perf-posting4): a renamed one is a
        # column the canonical table lacks, refused by the candidates' query before any plan.
        with pytest.raises((msgspec.ValidationError, psycopg.errors.UndefinedColumn), match="worked_hours"):
            planner.plan(
                conn, record_type="timebill", config=load_config(), periods=periods, dag_run_id="seam-p"
            )


def test_set_based_consumers_name_the_contract_fields_they_read() -> None:
    from psa_erp_sync.billing import events
    from psa_erp_sync.forecast import inputs

    for consumer in (events, inputs):
        for kind, names in consumer.CANONICAL_READS.items():
            assert set(names) <= set(records.FIELDS[kind]), consumer.__name__
    with pytest.raises(KeyError, match="worked_hours"):
        records.reads("time_entry", "project_ref", "worked_hours")
