"""The exceptions console's pages against a real ODS (unguarded app: Airflow's auth is tested
on a real api-server in test_console_auth.py)."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

from psa_erp_sync.api.exceptions_app import create_app
from tests.console.conftest import assert_no_personal_data


def _client(dsn: str) -> TestClient:
    return TestClient(create_app(dependencies=[], dsn=dsn))


def _items(page: str) -> list[str]:
    return re.findall(r'href="/console/trace/psa/(\d+)"', page)


def test_queue_filters_groups_and_amounts(seeded: dict[str, Any]) -> None:
    client = _client(seeded["dsn"])
    page = client.get("/console/").text
    assert sorted(_items(page)) == ["101", "102", "103", "104", "105", "106"]
    assert "Open items by cause: 6" in page
    # 125050 + 10000 + 5000 USD minor units; 40000 + 7500 + 2500 GBP
    assert "<td>USD</td><td class=num>3</td><td class=num>1400.50</td>" in page
    assert "<td>GBP</td><td class=num>3</td><td class=num>500.00</td>" in page
    by_owner = client.get("/console/", params={"owner": seeded["uk"]}).text
    assert sorted(_items(by_owner)) == ["104", "105", "106"]
    by_reason_le = client.get(
        "/console/", params={"reason_code": "INACTIVE_RECORD", "legal_entity": "LE-US1"}
    ).text
    assert sorted(_items(by_reason_le)) == ["101", "102", "103"]
    assert "GBP" not in by_reason_le.split("Amounts per currency")[1].split("</table>")[0]
    period = client.get("/console/", params={"date_from": "2026-11-01", "date_to": "2026-11-04"}).text
    assert sorted(_items(period)) == ["101", "102", "104"]
    aged = client.get("/console/", params={"min_age_days": 7}).text
    assert _items(aged) == ["106"]
    parked = client.get("/console/", params={"kind": "parked", "record_type": "time_entry"}).text
    assert _items(parked) == ["105"]
    assert client.get("/console/", params={"min_age_days": -1}).status_code == 422
    for text in (page, by_owner, period):
        assert_no_personal_data(text)


def test_every_filter_control_has_a_label(seeded: dict[str, Any]) -> None:
    client = _client(seeded["dsn"])
    for path in ("/console/", "/console/replay?preview=true&reason_code=INACTIVE_RECORD"):
        page = client.get(path).text
        controls = re.findall(r'<(?:select|input)[^>]*\bid="([^"]+)"', page)
        assert controls
        for control in controls:
            assert f'<label for="{control}">' in page, f"{path}: no label for {control}"


def test_trace_page_shows_the_path_without_personal_data(seeded: dict[str, Any]) -> None:
    client = _client(seeded["dsn"])
    page = client.get("/console/trace/psa/101").text
    assert "Trace of psa 101" in page and "rejected" in page and "psa-te-101" in page
    assert_no_personal_data(page)
    assert "Record not found" in client.get("/console/trace/psa/999999").text
    assert_no_personal_data(client.get("/trace/psa/101").text)  # the JSON view too
    assert_no_personal_data(client.get("/exceptions/summary").text)


def test_replay_dry_run_lists_what_the_dag_would_release(seeded: dict[str, Any]) -> None:
    client = _client(seeded["dsn"])
    page = client.get(
        "/console/replay", params={"preview": "true", "reason_code": "INACTIVE_RECORD", "owner": seeded["us"]}
    ).text
    assert "<strong>3</strong> postings would be released" in page
    assert sorted(_items(page)) == ["101", "102", "103"]
    assert "amounts: USD 1400.50." in page
    assert 'name="mode" value="replay"' in page  # the confirm button
    assert 'id="replay_everything"' not in page  # filtered: no "everything" tick box
    unfiltered = client.get("/console/replay", params={"preview": "true"}).text
    assert sorted(_items(unfiltered)) == ["101", "102", "103", "104", "105"]  # not the quarantined 106
    assert 'id="replay_everything"' in unfiltered
    assert_no_personal_data(page + unfiltered)
    # Nothing changed: the dry run reads only.
    assert sorted(_items(client.get("/console/").text)) == ["101", "102", "103", "104", "105", "106"]


def test_a_cross_site_replay_post_is_refused(seeded: dict[str, Any]) -> None:
    client = _client(seeded["dsn"])
    answer = client.post(
        "/console/replay",
        data={"record_type": "timebill", "mode": "replay", "reason_code": "INACTIVE_RECORD"},
        headers={"Origin": "https://evil.example", "Authorization": "Bearer x"},
    )
    assert answer.status_code == 403


def test_blank_form_fields_are_no_filter(seeded: dict[str, Any]) -> None:
    """A browser submits empty date and number fields as "" (found by the browser test)."""
    client = _client(seeded["dsn"])
    blank = client.get("/console/", params={"owner": "", "date_from": "", "date_to": "", "min_age_days": ""})
    assert blank.status_code == 200 and len(_items(blank.text)) == 6
    replay = client.get("/console/replay", params={"preview": "true", "date_from": "", "date_to": ""})
    assert replay.status_code == 200 and len(_items(replay.text)) == 5
    assert client.get("/console/", params={"date_from": "yesterday"}).status_code == 422
    assert client.get("/console/", params={"min_age_days": "-1"}).status_code == 422


def test_month_end_view(seeded: dict[str, Any]) -> None:
    from datetime import UTC, datetime

    import psycopg
    from psycopg.types.json import Jsonb

    from psa_erp_sync.api.console import month_end

    with psycopg.connect(seeded["dsn"]) as conn:
        for run, stage, count, amounts in (
            ("r1", "posted", 2, {"USD": "10.00"}),
            ("r2", "posted", 3, {"USD": "1400.50"}),
            ("r2", "erp_readback", 3, {"USD": "1400.50"}),
        ):
            conn.execute(
                "INSERT INTO audit.control_total (dag_id, run_id, record_type, stage, record_count, amounts,"
                " recorded_at) VALUES ('time_expense_sync', %s, 'timebill', %s, %s, %s, now() + %s * interval '1 s')",
                (run, stage, count, Jsonb(amounts), int(run[1])),
            )
        # ERP periods as master_data_sync stores them (the SuiteQL row: "T"/"F" flags): the quarter
        # rolls up and is not shown; only the latest three months are.
        for ext, start, end, flags in (
            ("LE-UK1-2026-08", "2026-08-01", "2026-08-31", {"closed": "T"}),
            ("LE-UK1-2026-09", "2026-09-01", "2026-09-30", {"closed": "T"}),
            ("LE-UK1-2026-10", "2026-10-01", "2026-10-31", {"arlocked": "T", "aplocked": "T"}),
            ("LE-UK1-2026-11", "2026-11-01", "2026-11-30", {}),
            ("LE-UK1-2026-Q4", "2026-10-01", "2026-12-31", {"isquarter": "T"}),
        ):
            body = {
                "externalid": ext,
                "startdate": start,
                "enddate": end,
                "closed": "F",
                "alllocked": "F",
                **flags,
            }
            conn.execute(
                "INSERT INTO master.erp_record (record_type, external_id, internal_id, version_hash, subsidiary,"
                " is_inactive, body) VALUES ('accountingperiod', %s, %s, 'v1', 'LE-UK1', false, %s)",
                (ext, ext, Jsonb(body)),
            )
        conn.commit()
        try:
            mid = {
                e["legal_entity"]: e
                for e in month_end(conn, datetime(2026, 11, 16, 15, tzinfo=UTC))["entities"]
            }
            end = month_end(conn, datetime(2026, 11, 30, 15, tzinfo=UTC))
            page = _client(seeded["dsn"]).get("/console/month-end").text
        finally:  # master data outlives clean_ods: leave no periods behind for later tests
            conn.execute("DELETE FROM master.erp_record WHERE record_type = 'accountingperiod'")
            conn.commit()
    # Monday 16 November: mid-month, normal cadence; the UK's 11th business day (no November holidays),
    # the US's 10th (Veterans Day, 11 November).
    assert (mid["LE-UK1"]["business_day"], mid["LE-US1"]["business_day"]) == (11, 10)
    assert not mid["LE-UK1"]["in_close"] and mid["LE-UK1"]["cadence_minutes"] == 60
    # Monday 30 November: the last business day, inside the close window, the close cadence.
    uk = {e["legal_entity"]: e for e in end["entities"]}["LE-UK1"]
    assert uk["in_close"] and uk["cadence_minutes"] == 15
    assert [(p["n"], p["minor"], p["currency"]) for p in uk["parked"]] == [(1, 7_500, "GBP")]  # 105
    assert [(p["period"], p["status"]) for p in uk["erp_periods"]] == [
        ("LE-UK1-2026-11", "open"),
        ("LE-UK1-2026-10", "open (AR, AP locked)"),
        ("LE-UK1-2026-09", "closed"),
    ]
    assert mid["LE-US1"]["erp_periods"] == []
    assert {(t["run_id"], t["stage"]) for t in end["control_totals"]} == {
        ("r2", "posted"),
        ("r2", "erp_readback"),
    }

    assert "LE-UK1" in page and "1 (75.00 GBP, oldest 2026-10-30)" in page
    assert "timebill: posted vs ERP read-back reconciled" in page
    assert "LE-UK1-2026-11: open; LE-UK1-2026-10: open (AR, AP locked); LE-UK1-2026-09: closed" in page
    assert "not read yet" in page  # the US entities: master data not synced in this test
    assert_no_personal_data(page)
