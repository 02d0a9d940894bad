"""Property: whatever sequence of versions, unapprovals, ERP postings, builds and invoicings a time
entry goes through, once its ready events are invoiced the sum of its invoiced lines (events and
credit lines) equals its current billable amount, and no invoiced line is ever changed."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from psa_erp_sync.billing.events import build_billing_events
from tests.billing.conftest import entry, invoice, project
from tests.billing.conftest import settings as billing_settings

# One step: a new version (hours, approved, posted), a build, or an invoicing of every ready event.
version = st.tuples(
    st.just("version"), st.sampled_from(["0.00", "1.00", "2.50"]), st.booleans(), st.booleans()
)
step = st.one_of(version, st.just(("build",)), st.just(("invoice",)))


def _invoiced(conn: psycopg.Connection) -> dict[str, tuple[Any, ...]]:
    rows = conn.execute(
        "SELECT event_ref, amount_minor, document_ref FROM billing.event WHERE state = 'invoiced'"
    )
    return {r[0]: tuple(r[1:]) for r in rows}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(step, max_size=12))
def test_invoiced_lines_sum_to_the_current_billable_amount(ods: psycopg.Connection, steps: list[Any]) -> None:
    ods.execute(
        "TRUNCATE billing.event, canonical.time_entry, ledger.posting, forecast.src_project, master.erp_record CASCADE"
    )
    project(ods, "10")
    config = billing_settings()
    current: dict[str, Any] = {"hours": "2.00", "approved": True}
    entry(ods, "t1", "10", version="v0", hours="2.00", rate=10000)
    seen: dict[str, tuple[Any, ...]] = {}
    for n, s in enumerate(steps):
        if s[0] == "version":
            _, hours, approved, posted = s
            current = {"hours": hours, "approved": approved}
            entry(
                ods,
                "t1",
                "10",
                version=f"v{n + 1}",
                hours=hours,
                rate=10000,
                approved=approved,
                posted=posted,
            )
        elif s[0] == "build":
            build_billing_events(ods, config=config, as_of=date(2026, 11, 30), run_id=f"r{n}")
        else:
            invoice(ods, f"INV-{n}")
        now = _invoiced(ods)
        assert all(now[ref] == before for ref, before in seen.items()), "an invoiced line changed"
        seen = now
    # The ERP catches up with the last version; one build; every ready line invoiced.
    ods.execute("UPDATE ledger.posting SET state = 'confirmed'")
    ods.execute(
        "INSERT INTO ledger.posting (idempotency_key, record_type, source_system, source_id, source_version,"
        " external_id, state) SELECT 'final', 'timebill', 'psa', source_id, version_hash, 'x', 'confirmed'"
        " FROM canonical.time_entry ON CONFLICT DO NOTHING"
    )
    build_billing_events(ods, config=config, as_of=date(2026, 11, 30), run_id="final")
    invoice(ods, "INV-final")
    again = build_billing_events(ods, config=config, as_of=date(2026, 11, 30), run_id="again")
    assert again.total("created") == again.total("credited") == again.total("withdrawn") == 0
    billed = ods.execute(
        "SELECT coalesce(sum(amount_minor), 0) FROM billing.event WHERE state = 'invoiced'"
    ).fetchone()
    expected = int(Decimal(current["hours"]) * 10000) if current["approved"] else 0
    assert billed is not None and billed[0] == expected
    credits = ods.execute(
        "SELECT credits_ref, count(*) FROM billing.event WHERE credits_ref IS NOT NULL GROUP BY 1"
    )
    assert all(n == 1 for _, n in credits)
    ods.rollback()
