"""Owner digests (psa_erp_sync.digest, pure functions): one digest per owner with counts, legal
entities and amounts per currency; the renderers escape what they show, carry no personal data and
give each channel its payload. Sending and marking items is tested in tests/notifications."""

from __future__ import annotations

from psa_erp_sync.digest import build, render_html, render_slack, render_teams, render_text
from psa_erp_sync.ods.exceptions import Unnotified

ITEMS = [
    Unnotified(1, "b", "quarantine", "X", "time_entry", "LE-1", 100, "EUR"),
    Unnotified(2, "a", "quarantine", "Y", "time_entry", None, None, None),
    Unnotified(3, "b", "quarantine", "Z", "time_entry", "LE-1", 250, "EUR"),
    Unnotified(4, "b", "quarantine", "Z", "expense_entry", "LE-2", 5, "JPY"),
]


def test_digests_group_per_owner_and_order_reasons_by_count() -> None:
    a, b = build(ITEMS, dag_id="d", run_id="r", console_url="https://x/console")
    assert (a.owner, a.items, a.amounts, a.without_amount, a.by_legal_entity) == (
        "a",
        1,
        (),
        1,
        (("(none)", 1),),
    )
    assert b.by_reason == (("quarantine", "Z", 2), ("quarantine", "X", 1))
    assert b.amounts == (("EUR", 350), ("JPY", 5)) and b.without_amount == 0
    assert b.console_link == "https://x/console?owner=b&status=open"


def test_the_text_names_counts_amounts_in_their_currency_and_the_queue_link() -> None:
    _, b = build(ITEMS, dag_id="time_expense_posting", run_id="r1", console_url="https://x/console")
    text = render_text(b)
    assert text.startswith("3 new exception item(s) for b, left by time_expense_posting run r1.")
    assert "       2  Z (quarantine)" in text and "       1  X (quarantine)" in text
    assert "  EUR 3.50" in text and "  JPY 5" in text  # minor units in each currency's exponent
    assert text.endswith("Open the queue: https://x/console?owner=b&status=open")
    assert b.subject() == "[psa-erp-sync] 3 new exception items for b"


def test_an_owner_without_amounts_is_told_so() -> None:
    a, _ = build(ITEMS, dag_id="d", run_id="r", console_url="https://x/console")
    assert "1 item(s) without a known amount" in render_text(a)
    assert a.subject() == "[psa-erp-sync] 1 new exception item for a"


def test_fixes_are_kept_for_the_reasons_present_only() -> None:
    fixes = {"Z": "Activate the project in the ERP", "NOT_HERE": "unused"}
    a, b = build(ITEMS, dag_id="d", run_id="r", console_url="https://x/console", fixes=fixes)
    assert a.fixes == {} and b.fixes == {"Z": "Activate the project in the ERP"}
    assert "<td>Activate the project in the ERP</td>" in render_html(b)


def test_the_html_escapes_what_it_shows() -> None:
    hostile = [Unnotified(9, "<script>", "quarantine", "R&D", "time_entry", "LE-<1>", 1, "USD")]
    (digest,) = build(hostile, dag_id="d", run_id="r", console_url="https://x/console")
    page = render_html(digest)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "R&amp;D" in page and "LE-&lt;1&gt;" in page
    assert "owner=%3Cscript%3E" in page  # the link's query is URL-encoded, then escaped


def test_the_summary_kept_in_the_ods_holds_counts_and_amounts_only() -> None:
    _, b = build(ITEMS, dag_id="d", run_id="r", console_url="https://x/console")
    assert b.summary() == {
        "by_reason": [
            {"kind": "quarantine", "reason_code": "Z", "count": 2},
            {"kind": "quarantine", "reason_code": "X", "count": 1},
        ],
        "by_legal_entity": {"LE-1": 2, "LE-2": 1},
        "amounts_minor": {"EUR": 350, "JPY": 5},
        "without_amount": 0,
    }


def test_chat_payloads_carry_the_subject_the_text_and_the_link() -> None:
    _, b = build(ITEMS, dag_id="d", run_id="r", console_url="https://x/console")
    slack = render_slack(b)
    assert slack["text"] == b.subject()
    assert slack["blocks"][0]["text"]["text"] == render_text(b)
    teams = render_teams(b)
    assert teams["@type"] == "MessageCard" and teams["title"] == b.subject()
    assert teams["text"] == render_text(b).replace("\n", "  \n")
    assert teams["potentialAction"][0]["targets"] == [{"os": "default", "uri": b.console_link}]
