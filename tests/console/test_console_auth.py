"""The console and the JSON views behind Airflow's auth on a real api-server with the plugin:
unauthenticated or forged calls are refused, an authenticated user sees the pages, and the
confirm button triggers ``dead_letter_replay`` through the REST API as that user (a viewer,
who may not trigger DAGs, is refused by Airflow itself)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.console.conftest import assert_no_personal_data, token

pytestmark = [pytest.mark.integration, pytest.mark.airflow]

GETS = [
    "/psa-erp-sync/exceptions/summary",
    "/psa-erp-sync/trace/psa/101",
    "/psa-erp-sync/console/",
    "/psa-erp-sync/console/trace/psa/101",
    "/psa-erp-sync/console/replay?preview=true",
    "/psa-erp-sync/console/replay/run?run_id=x",
]


def test_unauthenticated_and_forged_calls_are_refused(
    console_server: dict[str, Any], seeded: dict[str, Any]
) -> None:
    base = console_server["base_url"]
    with httpx.Client(base_url=base, timeout=30) as client:
        for path in GETS:
            assert client.get(path).status_code == 401, path
            forged = client.get(path, headers={"Authorization": "Bearer not-a-jwt"})
            assert forged.status_code == 403, path
            assert client.get(path, cookies={"_token": "not-a-jwt"}).status_code == 403, path
        post = client.post(
            "/psa-erp-sync/console/replay",
            data={"record_type": "timebill", "mode": "replay", "reason_code": "INACTIVE_RECORD"},
        )
        assert post.status_code == 401
        assert_no_personal_data(post.text)


def test_an_authenticated_user_sees_the_console_and_triggers_as_themselves(
    console_server: dict[str, Any], seeded: dict[str, Any]
) -> None:
    base = console_server["base_url"]
    user = {"Authorization": f"Bearer {token(base, 'ops-user')}"}
    with httpx.Client(base_url=base, timeout=60) as client:
        for path in GETS[:-1]:
            answer = client.get(path, headers=user)
            assert answer.status_code == 200, (path, answer.text[:300])
            assert_no_personal_data(answer.text)
        # Linked into the UI: navigation entries and a DAG tab, relative to the UI's base URL.
        plugins = client.get("/api/v2/plugins", headers=user).json()["plugins"]
        views = next(p for p in plugins if p["name"] == "psa_erp_sync")["external_views"]
        assert {(v["name"], v["destination"], v["href"]) for v in views} == {
            ("Exceptions console", "nav", "psa-erp-sync/console/"),
            ("Replay dead letters", "nav", "psa-erp-sync/console/replay"),
            ("Exceptions", "dag", "psa-erp-sync/console/"),
        }
        # The UI's session cookie works the same (the iframe sends it).
        assert (
            client.get("/psa-erp-sync/console/", cookies={"_token": user["Authorization"][7:]}).status_code
            == 200
        )

        form = {
            "record_type": "timebill",
            "mode": "replay",
            "reason_code": "INACTIVE_RECORD",
            "owner": seeded["us"],
        }
        started = client.post("/psa-erp-sync/console/replay", data=form, headers=user)
        assert started.status_code == 303, started.text[:500]
        run_id = httpx.URL(started.headers["location"]).params["run_id"]
        run = client.get(f"/api/v2/dags/dead_letter_replay/dagRuns/{run_id}", headers=user).json()
        assert run["conf"] == {
            "dry_run": False,
            "record_type": "timebill",
            "owner": seeded["us"],
            "reason_code": "INACTIVE_RECORD",
            "date_from": None,
            "date_to": None,
            "source_ids": [],
            "replay_everything": False,
        }
        assert run["triggering_user_name"] == "ops-user"
        page = client.get(started.headers["location"], headers=user).text
        assert 'http-equiv="refresh"' in page and run_id in page  # not finished: the page follows it

        viewer = {"Authorization": f"Bearer {token(base, 'ops-viewer')}"}
        refused = client.post("/psa-erp-sync/console/replay", data=form, headers=viewer)
        assert refused.status_code == 200 and "Airflow refused the trigger (403)" in refused.text
