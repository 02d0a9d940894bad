"""The exceptions console in a real browser: Playwright drives headless Chromium (Debian's
``chromium`` package) against a real ``airflow api-server`` with the plugin. Log in through
Airflow's login page, open the console from the navigation (an iframe in the UI), filter the
queue with the keyboard, open a trace and the month-end view, list a replay dry run, confirm a dry run through Airflow
and see a finished run's outcome. Screenshots go to ``.local/artifacts/console/``."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest

from tests.console.conftest import USERS, assert_no_personal_data, replay_dag, shot

pytestmark = [pytest.mark.integration, pytest.mark.airflow]


def test_console_in_the_airflow_ui(
    console_server: dict[str, Any],
    seeded: dict[str, Any],
    browser_page: Any,
) -> None:
    from playwright.sync_api import expect

    page = browser_page
    base = console_server["base_url"]

    # Log in through Airflow's own login page.
    page.goto(f"{base}/")
    page.wait_for_url("**/login**")
    page.get_by_label("Username").fill("ops-user")
    page.get_by_label("Password").fill(USERS["ops-user"][1])
    shot(page, "01-login")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "login" not in url)

    # The console is in the UI's navigation (Browse menu) and opens in an iframe.
    page.get_by_role("button", name="Browse").click()
    page.get_by_text("Exceptions console", exact=True).click()
    page.wait_for_url("**/plugin/psa-erp-sync-console")
    frame = page.frame_locator("iframe")
    expect(frame.get_by_role("heading", name="Exception queue")).to_be_visible()
    expect(frame.get_by_text("Open items by cause: 6")).to_be_visible()
    shot(page, "02-queue")

    # Every filter has a label; the filters are operable with the keyboard alone.
    for label in (
        "Owner",
        "Reason",
        "Legal entity",
        "Record type",
        "Kind",
        "Entry date from",
        "Entry date to",
        "Older than (days)",
    ):
        expect(frame.get_by_label(label, exact=True)).to_have_count(1)
    owner = frame.get_by_label("Owner", exact=True)
    owner.select_option(seeded["uk"])
    owner.focus()

    def focused() -> str:
        return str(
            frame.locator("body").evaluate(
                "() => { const e = document.activeElement;"
                " return !e || e === document.body ? '' : (e.id || e.textContent.trim()); }"
            )
        )

    assert focused() == "owner"
    tab_stops: list[str] = []
    for _ in range(30):  # a date input has a tab stop per segment: count each control once
        page.keyboard.press("Tab")
        now = focused()
        if not tab_stops or tab_stops[-1] != now:
            tab_stops.append(now)
        if now == "Filter":
            break
    assert tab_stops == [
        "reason_code",
        "legal_entity",
        "record_type",
        "kind",
        "date_from",
        "date_to",
        "min_age_days",
        "Filter",
    ], tab_stops
    page.keyboard.press("Enter")
    expect(frame.get_by_text("Open items by cause: 3")).to_be_visible()
    shot(page, "03-queue-filtered")

    # A trace.
    frame.get_by_role("link", name="104", exact=True).click()
    expect(frame.get_by_role("heading", name="Trace of psa 104")).to_be_visible()
    assert_no_personal_data(frame.locator("body").inner_text())
    shot(page, "04-trace")

    # The month-end view.
    frame.get_by_role("link", name="Month-end").click()
    expect(frame.get_by_role("heading", name="Month-end")).to_be_visible()
    expect(frame.get_by_role("cell", name="LE-UK1", exact=True)).to_be_visible()
    shot(page, "05-month-end")

    # Replay: the dry-run list, then a dry run confirmed through Airflow.
    frame.get_by_role("link", name="Replay dead letters").click()
    frame.get_by_label("Owner", exact=True).select_option(seeded["us"])
    frame.get_by_label("Reason", exact=True).select_option("INACTIVE_RECORD")
    frame.get_by_role("button", name="Dry run: list what would be replayed").click()
    expect(frame.get_by_role("status")).to_contain_text("3 postings would be released")
    expect(frame.get_by_role("status")).to_contain_text("USD 1400.50")
    assert_no_personal_data(frame.locator("body").inner_text())
    shot(page, "06-replay-dry-run-list")
    frame.get_by_role("button", name="Dry run in Airflow").click()
    expect(frame.get_by_role("heading", name="Replay run")).to_be_visible()
    expect(frame.locator("#run-state")).to_have_text("queued")
    shot(page, "07-replay-triggered")

    # No scheduler runs in this test: the same request runs through dag.test(), and the run page
    # shows a finished run's outcome.
    conf = {
        "dry_run": True,
        "record_type": "timebill",
        "owner": seeded["us"],
        "reason_code": "INACTIVE_RECORD",
    }
    run = replay_dag().test(run_conf=conf)
    assert run.state == "success"
    page.goto(f"{base}/psa-erp-sync/console/replay/run?{urlencode({'run_id': run.run_id})}")
    expect(page.locator("#run-state")).to_have_text("success")
    expect(page.get_by_text("matched")).to_be_visible()
    shot(page, "08-replay-run-finished")
