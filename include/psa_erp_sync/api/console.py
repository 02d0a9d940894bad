"""The exceptions console: server-rendered pages for operators inside the Airflow UI.

Mounted with the JSON views of ``psa_erp_sync.api.exceptions_app`` (so under
``/psa-erp-sync/console``, behind the same Airflow auth guard) and linked into the UI by
``external_views`` in ``plugins/psa_erp_sync_plugin.py`` (a navigation entry and a DAG tab, both
shown in an iframe on the same origin, so the UI's ``_token`` cookie authenticates the pages).

Plain HTML and CSS, no JavaScript, no external resources: forms are ordinary GET/POST forms, every
control has a label, the tab order is the document order. Pages:

- ``/console/``: the open exception queue, filtered (owner, reason, legal entity, record type,
  kind, entry dates, age), counts grouped by cause, amounts per currency, each item linked to its
  trace;
- ``/console/trace/{source_system}/{source_id}``: the record trace (``psa_erp_sync.trace``);
- ``/console/replay``: the dry-run list of a replay filter (``posting.replay.select`` and
  ``summarize``, the same the DAG runs), then a confirm button that triggers
  ``dead_letter_replay`` through Airflow's REST API with the same filter, on behalf of the
  logged-in user (their own token: Airflow checks their permission to trigger);
- ``/console/replay/run``: follows that run (the page refreshes itself until the run ends) and shows
  its outcome: task states, what was selected, released and posted (``post_replayed``'s counts),
  and each replayed record as the ledger holds it now (state, ERP external and internal id).

No personal data is shown: ids, codes, owner teams (``config/ownership.yaml``), dates, amounts and
states; never ``exceptions.item.detail``, staging payloads, user references or notes.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode, urlparse

import psycopg
from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from psycopg.rows import dict_row

from psa_erp_sync.contracts import kinds

REPLAY_DAG = "dead_letter_replay"
RECORD_TYPES = kinds.record_type_labels()
ITEM_RECORD_TYPES = tuple(kinds.KINDS)
KINDS = ("quarantine", "dead_letter", "validation", "parked", "leakage", "reconciliation")
TERMINAL = {"success", "failed"}
QUEUE_LIMIT = 500
DRY_RUN_LIMIT = 200
COOKIE_NAME_JWT_TOKEN = "_token"  # noqa: S105 - the name of Airflow's UI session cookie

CSS = """
body{font-family:system-ui,sans-serif;margin:0;padding:1rem 1.5rem;color:#1a1a1a;background:#fff}
a{color:#0b57d0}a:focus,button:focus,input:focus,select:focus{outline:3px solid #f59e0b;outline-offset:2px}
.skip{position:absolute;left:-999px}.skip:focus{left:1rem;top:.5rem;background:#fff;padding:.25rem}
nav a{margin-right:1rem}h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.5rem}
form.filters{display:flex;flex-wrap:wrap;gap:.75rem;align-items:flex-end}
form.filters div{display:flex;flex-direction:column}label{font-size:.85rem;margin-bottom:.15rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff7e6;border-left:4px solid #f59e0b;padding:.5rem}.error{background:#fdecea;border-left:4px solid #d93025;padding:.5rem}
button{padding:.35rem .9rem}dl{display:grid;grid-template-columns:max-content 1fr;gap:.1rem 1rem}dt{font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _base(request: Request) -> str:
    """The console's own path under the mount point (``/psa-erp-sync/console`` in Airflow)."""
    return f"{request.scope.get('root_path', '')}/console"


def _page(request: Request, title: str, body: str, *, refresh: int | None = None) -> HTMLResponse:
    base = _base(request)
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return HTMLResponse(
        f"""<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} - psa-erp-sync</title><style>{CSS}</style></head><body>
<a class="skip" href="#main">Skip to content</a>
<nav aria-label="Console"><a href="{base}/">Exception queue</a><a href="{base}/replay">Replay dead letters</a>
<a href="{base}/month-end">Month-end</a></nav>
<main id="main"><h1>{_e(title)}</h1>{body}</main></body></html>"""
    )


def _select(
    name: str, label: str, options: Iterable[tuple[str, str]], chosen: str | None, *, blank: str = "Any"
) -> str:
    opts = [f'<option value="">{_e(blank)}</option>'] if blank else []
    opts += [
        f'<option value="{_e(v)}"{" selected" if v == chosen else ""}>{_e(text)}</option>'
        for v, text in options
    ]
    return f'<div><label for="{name}">{_e(label)}</label><select id="{name}" name="{name}">{"".join(opts)}</select></div>'


def _input(name: str, label: str, value: Any, *, kind: str = "text", extra: str = "") -> str:
    return (
        f'<div><label for="{name}">{_e(label)}</label>'
        f'<input id="{name}" name="{name}" type="{kind}" value="{_e(value)}"{extra}></div>'
    )


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], caption: str, *, numeric: Sequence[int] = ()
) -> str:
    head = "".join(f'<th scope="col">{_e(h)}</th>' for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td{' class=num' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row in rows
    )
    return (
        f"<table><caption>{_e(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    )


def _date(value: str | None, name: str) -> date | None:
    """A form's date field: blank (the browser sends ``""`` for an empty field) is no filter."""
    if not value or not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError as exc:
        raise HTTPException(status_code=422, detail=f"{name}: not a date (YYYY-MM-DD)") from exc


def _days(value: str | None) -> int | None:
    if not value or not value.strip():
        return None
    if not value.strip().isdigit() or int(value) > 3650:
        raise HTTPException(status_code=422, detail="min_age_days: a whole number of days, 0 to 3650")
    return int(value)


def _money(minor: int | None, currency: str | None) -> str:
    if minor is None or not currency:
        return ""
    from psa_erp_sync.money import format_minor

    return _e(format_minor(int(minor), currency))


# -- the queue -----------------------------------------------------------------------------------

_AMOUNT = "COALESCE(t.amount_minor, x.amount_minor)"
_CURRENCY = "COALESCE(t.currency, x.currency)"
_ENTRY_DATE = "COALESCE(t.spent_date, x.spent_date)"
_LEGAL_ENTITY = "COALESCE(i.legal_entity, t.legal_entity, x.legal_entity)"
_FROM = """
FROM exceptions.item i
LEFT JOIN canonical.time_entry t
       ON i.record_type = 'time_entry' AND t.source_system = i.source_system AND t.source_id = i.source_id
LEFT JOIN canonical.expense_entry x
       ON i.record_type = 'expense_entry' AND x.source_system = i.source_system AND x.source_id = i.source_id
"""


def queue_where(
    *,
    owner: str | None,
    reason_code: str | None,
    legal_entity: str | None,
    record_type: str | None,
    kind: str | None,
    date_from: date | None,
    date_to: date | None,
    min_age_days: int | None,
) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (parameterized) of the open queue for these filters."""
    where = ["i.status = 'open'"]
    params: dict[str, Any] = {}
    for column, key, value in (
        ("i.owner", "owner", owner),
        ("i.reason_code", "reason", reason_code),
        (_LEGAL_ENTITY, "le", legal_entity),
        ("i.record_type", "rt", record_type),
        ("i.kind", "kind", kind),
    ):
        if value:
            where.append(f"{column} = %({key})s")
            params[key] = value
    if date_from:
        where.append(f"{_ENTRY_DATE} >= %(from)s")
        params["from"] = date_from
    if date_to:
        where.append(f"{_ENTRY_DATE} <= %(to)s")
        params["to"] = date_to
    if min_age_days:
        where.append("i.first_seen <= now() - make_interval(days => %(age)s)")
        params["age"] = min_age_days
    return " AND ".join(where), params


def queue(conn: psycopg.Connection, **filters: Any) -> dict[str, Any]:
    """Open items matching the filters: grouped counts by cause, amounts per currency, the items
    (oldest first, at most ``QUEUE_LIMIT``) and the choices for the filter dropdowns."""
    where, params = queue_where(**filters)
    with conn.cursor(row_factory=dict_row) as cur:
        groups = cur.execute(
            f"SELECT i.kind, i.reason_code, i.owner, count(*) AS n {_FROM} WHERE {where}"
            " GROUP BY 1, 2, 3 ORDER BY 4 DESC, 1, 2, 3",
            params,
        ).fetchall()
        amounts = cur.execute(
            f"SELECT {_CURRENCY} AS currency, sum({_AMOUNT}) AS minor, count(*) AS n {_FROM}"
            f" WHERE {where} AND {_AMOUNT} IS NOT NULL GROUP BY 1 ORDER BY 1",
            params,
        ).fetchall()
        items = cur.execute(
            f"""SELECT i.kind, i.reason_code, i.owner, {_LEGAL_ENTITY} AS legal_entity, i.record_type,
                       i.source_system, i.source_id, {_ENTRY_DATE} AS entry_date, {_AMOUNT} AS amount_minor,
                       {_CURRENCY} AS currency, i.first_seen, i.occurrences,
                       (now()::date - i.first_seen::date) AS age_days
                {_FROM} WHERE {where} ORDER BY i.first_seen, i.id LIMIT {QUEUE_LIMIT}""",
            params,
        ).fetchall()
        choices = (
            cur.execute(
                f"SELECT array_agg(DISTINCT i.owner) AS owners, array_agg(DISTINCT i.reason_code) AS reasons,"
                f" array_agg(DISTINCT {_LEGAL_ENTITY}) FILTER (WHERE {_LEGAL_ENTITY} IS NOT NULL) AS les"
                f" {_FROM} WHERE i.status = 'open'"
            ).fetchone()
            or {}
        )
    return {
        "groups": groups,
        "amounts": amounts,
        "items": items,
        "total": sum(int(g["n"]) for g in groups),
        "owners": sorted(choices.get("owners") or []),
        "reasons": sorted(choices.get("reasons") or []),
        "legal_entities": sorted(choices.get("les") or []),
    }


def _trace_link(base: str, system: str, source_id: str) -> str:
    return f'<a href="{base}/trace/{quote(system, safe="")}/{quote(source_id, safe="")}">{_e(source_id)}</a>'


def _render(value: Any) -> str:
    """A trace value as HTML: dicts as definition lists, lists of dicts as tables, all escaped."""
    if isinstance(value, dict):
        if not value:
            return "<em>none</em>"
        return "<dl>" + "".join(f"<dt>{_e(k)}</dt><dd>{_render(v)}</dd>" for k, v in value.items()) + "</dl>"
    if isinstance(value, list):
        if not value:
            return "<em>none</em>"
        if all(isinstance(v, dict) for v in value):
            keys = list(dict.fromkeys(k for v in value for k in v))
            return _table(keys, ([_render(v.get(k)) for k in keys] for v in value), f"{len(value)} rows")
        return "<ul>" + "".join(f"<li>{_render(v)}</li>" for v in value) + "</ul>"
    return _e(value)


# -- the replay ----------------------------------------------------------------------------------


def _token(request: Request) -> str:
    """The caller's Airflow JWT (Bearer header, else the UI's cookie): the replay is triggered as
    them, so Airflow checks their own permission on the DAG."""
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    token = request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    if not token:
        raise HTTPException(status_code=401, detail="Not authenticated")
    return token


def _same_origin(request: Request) -> None:
    """Refuse a cross-site form post (the session cookie is SameSite=Lax already; this is the
    second lock)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlparse(origin).netloc != request.headers.get("host"):
        raise HTTPException(status_code=403, detail="cross-origin request refused")


def replay_conf(
    *,
    record_type: str,
    owner: str | None,
    reason_code: str | None,
    date_from: date | None,
    date_to: date | None,
    dry_run: bool,
    replay_everything: bool,
) -> dict[str, Any]:
    """The ``dead_letter_replay`` conf for a console filter (the DAG's own params)."""
    return {
        "dry_run": dry_run,
        "record_type": record_type,
        "owner": owner or None,
        "reason_code": reason_code or None,
        "date_from": date_from.isoformat() if date_from else None,
        "date_to": date_to.isoformat() if date_to else None,
        "source_ids": [],
        "replay_everything": replay_everything,
    }


PERIODS_SHOWN = 3  # the latest posting periods per legal entity on the month-end view


def erp_periods(conn: psycopg.Connection) -> dict[str, list[dict[str, Any]]]:
    """Per legal entity, its latest ERP posting periods (months; quarters and years roll up and
    never take a posting) as ``master_data_sync`` last read them from the ERP: open, closed or which
    lock, and when they were read."""
    from pydantic import ValidationError

    from psa_erp_sync.posting.periods import AccountingPeriod

    out: dict[str, list[dict[str, Any]]] = {}
    rows = conn.execute(
        "SELECT subsidiary, body, synced_at FROM master.erp_record WHERE record_type = 'accountingperiod'"
    ).fetchall()
    periods = []
    for subsidiary, body, synced_at in rows:
        try:
            period = AccountingPeriod.model_validate(
                {"subsidiary": subsidiary, **{k.lower(): v for k, v in body.items()}}
            )
        except ValidationError:
            continue  # a row without dates is no posting period
        if not period.is_summary:
            periods.append((period, synced_at))
    for period, synced_at in sorted(periods, key=lambda ps: ps[0].start_date, reverse=True):
        shown = out.setdefault(period.subsidiary, [])
        if len(shown) < PERIODS_SHOWN:
            locks = [name for name, on in (("AR", period.ar_locked), ("AP", period.ap_locked)) if on]
            status = "open" + (f" ({', '.join(locks)} locked)" if locks else "")
            if period.closed or period.all_locked:
                status = "closed" if period.closed else "all locked"
            shown.append(
                {
                    "period": period.external_id,
                    "start": period.start_date,
                    "status": status,
                    "read_at": synced_at,
                }
            )
    return out


def month_end(conn: psycopg.Connection, now: datetime) -> dict[str, Any]:
    """Per legal entity: local date, business day of the month, this month's close window, whether
    it is in close now, the posting cadence in force, its latest ERP periods (open or closed, as last
    synced), and what is parked waiting for a period (count and amounts per currency); plus the
    latest run's control totals by stage."""
    from zoneinfo import ZoneInfo

    from psa_erp_sync.calendar import close
    from psa_erp_sync.config import load_config, posting_cadence

    config = load_config()
    cadence = posting_cadence()
    periods = erp_periods(conn)
    parked: dict[str, list[dict[str, Any]]] = {}
    with conn.cursor(row_factory=dict_row) as cur:
        for row in cur.execute(
            f"SELECT {_LEGAL_ENTITY} AS le, {_CURRENCY} AS currency, count(*) AS n, sum({_AMOUNT}) AS minor,"
            f" min({_ENTRY_DATE}) AS oldest {_FROM} WHERE i.status = 'open' AND i.kind = 'parked'"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ):
            parked.setdefault(row["le"] or "", []).append(row)
        latest = cur.execute(
            "SELECT dag_id, run_id, record_type, stage, record_count, amounts, recorded_at FROM audit.control_total"
            " WHERE (dag_id, run_id) = (SELECT dag_id, run_id FROM audit.control_total"
            " ORDER BY recorded_at DESC, id DESC LIMIT 1) ORDER BY record_type, id"
        ).fetchall()
    entities = []
    for code, le in sorted(config.legal_entities.legal_entities.items()):
        calendar = config.close_calendars.calendars[le.close_calendar]
        today = now.astimezone(ZoneInfo(le.timezone)).date()
        days = close.business_days(today.year, today.month, le.country)
        start, end = close.close_window(today.year, today.month, calendar)
        in_close = close.in_close(now, calendar, le.timezone)
        entities.append(
            {
                "legal_entity": code,
                "timezone": le.timezone,
                "today": today,
                "business_day": days.index(today) + 1 if today in days else None,
                "close_window": (start, end),
                "in_close": in_close,
                "cadence_minutes": cadence.close if in_close else cadence.normal,
                "closed_period_policy": le.closed_period_policy,
                "erp_periods": periods.get(code, []),
                "parked": parked.get(code, []),
            }
        )
    return {"entities": entities, "control_totals": latest}


REPLAY_TASKS_WITH_RESULTS = ("select_dead_letters", "release_for_posting", "post_replayed")
REPLAYED_SHOWN = 200  # replayed records listed on a run's page
POSTING_OUTCOME = (
    ("posted", "posted"),
    ("already_posted", "already in the ERP"),
    ("ambiguous_resolved", "resolved by read-back"),
    ("rejected", "rejected again"),
    ("parked", "parked"),
    ("still_pending", "still pending"),
)


def _xcom_value(value: Any) -> Any:
    """An XCom value as the REST API gives it: native JSON, or (older rows) a JSON string."""
    if isinstance(value, str):
        import json

        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def replayed_records(conn: psycopg.Connection, run_id: str) -> list[dict[str, Any]]:
    """The records a replay run released, each with its latest ledger posting now: state, ERP
    external and internal id, amount (ids, states and amounts only; no personal data). During a
    parallel run the record's own lane is shown (its book of record), its shadow lane only when it
    has no row of its own."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT e.source_system, e.source_id, e.reason_code, p.state, p.external_id, p.erp_internal_id,
                      p.amount_minor, p.currency
               FROM exceptions.item e
               JOIN LATERAL (SELECT state, external_id, erp_internal_id, amount_minor, currency
                             FROM ledger.posting p
                             WHERE p.source_system = e.source_system AND p.source_id = e.source_id
                               AND p.record_type = CASE e.record_type WHEN 'time_entry' THEN 'timebill'
                                                   WHEN 'expense_entry' THEN 'expensereport' END
                             ORDER BY p.shadow, p.seq DESC LIMIT 1) p ON true
               WHERE e.last_run_id = %s AND e.status = 'replayed'
               ORDER BY e.source_system, e.source_id""",
            (run_id,),
        ).fetchall()


def _run_results_html(outcome: dict[str, Any]) -> str:
    """What the run's tasks returned: the selection, how many were released, what was posted."""
    body = ""
    selected = outcome.get("select_dead_letters")
    if isinstance(selected, dict):
        body += "<h2>Selected</h2>" + _render(
            {
                k: selected.get(k)
                for k in ("matched", "amounts", "by_owner_and_reason", "needs_approval", "dry_run")
            }
        )
    if "release_for_posting" in outcome:
        body += f'<h2>Released</h2><p id="released">{_e(outcome["release_for_posting"])} postings released for posting.</p>'
    posted = outcome.get("post_replayed")
    counts = posted.get("outcome") if isinstance(posted, dict) else None
    if isinstance(counts, dict):
        parts = ", ".join(f"{int(counts.get(k) or 0)} {text}" for k, text in POSTING_OUTCOME)
        body += f'<h2>Posted to the ERP</h2><p id="posted">{_e(parts)}.</p>'
    return body


def _ledger_outcome_html(base: str, records: list[dict[str, Any]]) -> str:
    """A finished run's replayed records as the ledger holds them now: counts per state, then each
    record with its ERP ids."""
    states: dict[str, int] = {}
    for r in records:
        states[r["state"]] = states.get(r["state"], 0) + 1
    shown = records[:REPLAYED_SHOWN]
    return (
        "<h2>Outcome in the ledger</h2>"
        + _table(
            ["Ledger state now", "Records"],
            ([_e(s), str(n)] for s, n in sorted(states.items())),
            "Replayed records",
            numeric=[1],
        )
        + _table(
            ["Record", "Reason", "Ledger state now", "ERP external id", "ERP internal id", "Amount"],
            (
                [
                    _trace_link(base, r["source_system"], r["source_id"]),
                    _e(r["reason_code"]),
                    _e(r["state"]),
                    _e(r["external_id"]),
                    _e(r["erp_internal_id"]),
                    _money(r["amount_minor"], r["currency"]),
                ]
                for r in shown
            ),
            f"Replayed records and their ERP ids ({len(shown)} of {len(records)} shown)",
            numeric=[5],
        )
    )


def _queue_form(base: str, q: dict[str, Any], chosen: dict[str, Any]) -> str:
    """The queue page's filter form, showing the values ``chosen``."""
    return (
        f'<form class="filters" method="get" action="{base}/" aria-label="Filter the queue">'
        + _select("owner", "Owner", ((o, o) for o in q["owners"]), chosen["owner"])
        + _select("reason_code", "Reason", ((r, r) for r in q["reasons"]), chosen["reason_code"])
        + _select(
            "legal_entity", "Legal entity", ((le, le) for le in q["legal_entities"]), chosen["legal_entity"]
        )
        + _select("record_type", "Record type", ((r, r) for r in ITEM_RECORD_TYPES), chosen["record_type"])
        + _select("kind", "Kind", ((k, k) for k in KINDS), chosen["kind"])
        + _input("date_from", "Entry date from", chosen["date_from"] or "", kind="date")
        + _input("date_to", "Entry date to", chosen["date_to"] or "", kind="date")
        + _input(
            "min_age_days",
            "Older than (days)",
            "" if chosen["min_age_days"] is None else chosen["min_age_days"],
            kind="number",
            extra=' min="0" max="3650"',
        )
        + f'<div><button type="submit">Filter</button></div><div><a href="{base}/">Clear</a></div></form>'
    )


def _queue_tables(base: str, q: dict[str, Any], filters: dict[str, Any]) -> str:
    """The queue page's tables: open items by cause, amounts per currency, the items."""
    groups = _table(
        ["Kind", "Reason", "Owner", "Items"],
        (
            [
                _e(g["kind"]),
                _e(g["reason_code"]),
                _e(g["owner"]),
                f'<a href="{base}/?{_e(urlencode({**_qs(filters), "owner": g["owner"], "reason_code": g["reason_code"], "kind": g["kind"]}))}">{g["n"]}</a>',
            ]
            for g in q["groups"]
        ),
        f"Open items by cause: {q['total']}",
        numeric=[3],
    )
    amounts = _table(
        ["Currency", "Items with an amount", "Amount"],
        ([_e(a["currency"]), str(a["n"]), _money(a["minor"], a["currency"])] for a in q["amounts"]),
        "Amounts per currency",
        numeric=[1, 2],
    )
    shown = len(q["items"])
    items = _table(
        [
            "Record",
            "System",
            "Type",
            "Kind",
            "Reason",
            "Owner",
            "Legal entity",
            "Entry date",
            "Amount",
            "Age (days)",
            "Seen",
        ],
        (
            [
                _trace_link(base, i["source_system"], i["source_id"]),
                _e(i["source_system"]),
                _e(i["record_type"]),
                _e(i["kind"]),
                _e(i["reason_code"]),
                _e(i["owner"]),
                _e(i["legal_entity"]),
                _e(i["entry_date"]),
                _money(i["amount_minor"], i["currency"]),
                str(i["age_days"]),
                str(i["occurrences"]),
            ]
            for i in q["items"]
        ),
        f"Items, oldest first ({shown} shown"
        + (f" of {q['total']}, narrow the filter to see the rest)" if shown < q["total"] else ")"),
        numeric=[8, 9, 10],
    )
    return groups + amounts + items


def _dry_run_html(base: str, rows: list[dict[str, Any]], summary: dict[str, Any], approval: list[str]) -> str:
    """The replay page's dry run: what would be replayed, and whether it waits for an approval."""
    amounts = ", ".join(f"{c} {a}" for c, a in summary["amounts"].items()) or "none"
    result = (
        f'<h2 id="dry-run">Dry run</h2><p role="status"><strong>{summary["matched"]}</strong> postings would be'
        f" released and posted again; amounts: {_e(amounts)}.</p>"
        + _table(
            ["Owner / reason", "Postings"],
            ([_e(k), str(n)] for k, n in sorted(summary["by_owner_and_reason"].items())),
            "By owner and reason",
            numeric=[1],
        )
        + _table(
            [
                "Record",
                "Owner",
                "Reason",
                "Legal entity",
                "Entry date",
                "Amount",
                "Ledger state",
                "ERP external id",
            ],
            (
                [
                    _trace_link(base, "psa", r["source_id"]),
                    _e(r["owner"]),
                    _e(r["reason_code"]),
                    _e(r["legal_entity"]),
                    _e(r["spent_date"]),
                    _money(r["amount_minor"], r["currency"]),
                    _e(r["state"]),
                    _e(r["external_id"]),
                ]
                for r in rows[:DRY_RUN_LIMIT]
            ),
            f"What would be replayed ({min(len(rows), DRY_RUN_LIMIT)} of {len(rows)} shown)",
            numeric=[5],
        )
    )
    if approval:
        result += (
            '<p class="note">A confirmed replay of this selection waits for a finance approval in Airflow: '
            + _e("; ".join(approval))
            + "</p>"
        )
    return result


def _replay_confirm_form(base: str, chosen: dict[str, Any]) -> str:
    """The form that confirms a replay of the ``chosen`` filter (a replay of everything asks twice)."""
    unfiltered = not (chosen["owner"] or chosen["reason_code"] or chosen["date_from"] or chosen["date_to"])
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{_e(v)}">'
        for k, v in (
            ("record_type", chosen["record_type"]),
            ("owner", chosen["owner"] or ""),
            ("reason_code", chosen["reason_code"] or ""),
            ("date_from", chosen["date_from"] or ""),
            ("date_to", chosen["date_to"] or ""),
        )
    )
    everything = (
        '<div><input id="replay_everything" name="replay_everything" type="checkbox" value="true" required>'
        '<label for="replay_everything">No filter: replay every open dead letter and parked posting</label></div>'
        if unfiltered
        else ""
    )
    return (
        f'<form method="post" action="{base}/replay" aria-label="Confirm the replay">{hidden}{everything}'
        '<button type="submit" name="mode" value="replay">Confirm: replay these through Airflow</button> '
        '<button type="submit" name="mode" value="dry_run">Dry run in Airflow</button></form>'
    )


def create_router(
    connect: Callable[[], AbstractContextManager[psycopg.Connection]],
    *,
    api_base: str | None = None,
) -> APIRouter:
    """The console's routes; ``connect`` opens an ODS connection, ``api_base`` is Airflow's REST
    API origin (default: the origin the request came in on, i.e. this api-server)."""
    pages = _Console(connect, api_base)
    router = APIRouter(prefix="/console", include_in_schema=False)
    router.add_api_route("/", pages.queue_page, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route(
        "/trace/{source_system}/{source_id}", pages.trace_page, methods=["GET"], response_class=HTMLResponse
    )
    router.add_api_route("/replay", pages.replay_page, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/replay", pages.replay_trigger, methods=["POST"])
    router.add_api_route("/replay/run", pages.replay_run, methods=["GET"], response_class=HTMLResponse)
    router.add_api_route("/month-end", pages.month_end_page, methods=["GET"], response_class=HTMLResponse)
    return router


class _Console:
    """The console's pages (each method is one route of :func:`create_router`)."""

    def __init__(
        self, connect: Callable[[], AbstractContextManager[psycopg.Connection]], api_base: str | None
    ) -> None:
        self.connect = connect
        self.api_base = api_base

    def airflow(self, request: Request) -> Any:
        import httpx

        origin = self.api_base or f"{request.url.scheme}://{request.url.netloc}"
        return httpx.Client(
            base_url=f"{origin}/api/v2", headers={"Authorization": f"Bearer {_token(request)}"}, timeout=30
        )

    def queue_page(
        self,
        request: Request,
        owner: str | None = None,
        reason_code: str | None = None,
        legal_entity: str | None = None,
        record_type: str | None = None,
        kind: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        min_age_days: str | None = None,
    ) -> HTMLResponse:
        base = _base(request)
        since, until, age = _date(date_from, "date_from"), _date(date_to, "date_to"), _days(min_age_days)
        filters = {
            "owner": owner or None,
            "reason_code": reason_code or None,
            "legal_entity": legal_entity or None,
            "record_type": record_type or None,
            "kind": kind or None,
            "date_from": since,
            "date_to": until,
            "min_age_days": age,
        }
        with self.connect() as conn:
            q = queue(conn, **filters)
        chosen = {**filters, "owner": owner, "reason_code": reason_code, "legal_entity": legal_entity}
        chosen |= {"record_type": record_type, "kind": kind, "min_age_days": min_age_days}
        return _page(
            request, "Exception queue", _queue_form(base, q, chosen) + _queue_tables(base, q, filters)
        )

    def trace_page(self, request: Request, source_system: str, source_id: str) -> HTMLResponse:
        from psa_erp_sync.trace import RecordNotFound, trace

        try:
            with self.connect() as conn:
                records = trace(conn, source_system, source_id)
        except RecordNotFound as exc:
            return _page(request, "Record not found", f'<p class="error" role="alert">{_e(exc)}</p>')
        sections = "".join(
            f"<section><h2>{_e(r.get('kind', 'record'))} {_e(r.get('source_id', source_id))}</h2>"
            + "".join(f"<h3>{_e(k)}</h3>{_render(v)}" for k, v in r.items())
            + "</section>"
            for r in records
        )
        return _page(request, f"Trace of {source_system} {source_id}", sections)

    def replay_page(
        self,
        request: Request,
        record_type: str = "timebill",
        owner: str | None = None,
        reason_code: str | None = None,
        date_from: str | None = None,
        date_to: str | None = None,
        preview: bool = False,
    ) -> HTMLResponse:
        from psa_erp_sync.config import load_config
        from psa_erp_sync.posting import replay

        base = _base(request)
        since, until = _date(date_from, "date_from"), _date(date_to, "date_to")
        if record_type not in RECORD_TYPES:
            raise HTTPException(status_code=422, detail=f"record_type must be one of {sorted(RECORD_TYPES)}")
        with self.connect() as conn:
            q = queue(
                conn,
                **dict.fromkeys(
                    (
                        "owner",
                        "reason_code",
                        "legal_entity",
                        "record_type",
                        "kind",
                        "date_from",
                        "date_to",
                        "min_age_days",
                    )
                ),
            )
        form = (
            f'<form class="filters" method="get" action="{base}/replay" aria-label="Replay filter">'
            + _select("record_type", "Record type", RECORD_TYPES.items(), record_type, blank="")
            + _select("owner", "Owner", ((o, o) for o in q["owners"]), owner)
            + _select("reason_code", "Reason", ((r, r) for r in q["reasons"]), reason_code)
            + _input("date_from", "Entry date from", since or "", kind="date")
            + _input("date_to", "Entry date to", until or "", kind="date")
            + '<input type="hidden" name="preview" value="true">'
            + '<div><button type="submit">Dry run: list what would be replayed</button></div></form>'
        )
        if not preview:
            return _page(request, "Replay dead letters", form)
        f = replay.ReplayFilter(
            record_type=record_type,
            owner=owner or None,
            reason_code=reason_code or None,
            date_from=since,
            date_to=until,
        )
        with self.connect() as conn:
            rows = replay.select(conn, f)
        summary = replay.summarize(rows)
        approval = load_config().mappings.replay.needs_approval(summary["matched"], summary["amounts_minor"])
        result = _dry_run_html(base, rows, summary, approval)
        if rows:
            chosen = {"record_type": record_type, "owner": owner, "reason_code": reason_code}
            result += _replay_confirm_form(base, {**chosen, "date_from": since, "date_to": until})
        return _page(request, "Replay dead letters", form + result)

    def replay_trigger(
        self,
        request: Request,
        record_type: Annotated[str, Form()],
        mode: Annotated[str, Form()],
        owner: Annotated[str, Form()] = "",
        reason_code: Annotated[str, Form()] = "",
        date_from: Annotated[str, Form()] = "",
        date_to: Annotated[str, Form()] = "",
        replay_everything: Annotated[bool, Form()] = False,
    ) -> Any:
        _same_origin(request)
        if record_type not in RECORD_TYPES or mode not in ("replay", "dry_run"):
            raise HTTPException(status_code=422, detail="unknown record type or mode")
        conf = replay_conf(
            record_type=record_type,
            owner=owner,
            reason_code=reason_code,
            date_from=_date(date_from, "date_from"),
            date_to=_date(date_to, "date_to"),
            dry_run=mode == "dry_run",
            replay_everything=replay_everything,
        )
        with self.airflow(request) as api:
            answer = api.post(f"/dags/{REPLAY_DAG}/dagRuns", json={"logical_date": None, "conf": conf})
        if answer.status_code not in (200, 201):
            return _page(
                request,
                "Replay not started",
                f'<p class="error" role="alert">Airflow refused the trigger ({answer.status_code}):'
                f" {_e(answer.text[:500])}</p>",
            )
        run_id = answer.json()["dag_run_id"]
        return RedirectResponse(
            f"{_base(request)}/replay/run?{urlencode({'run_id': run_id})}", status_code=303
        )

    def replay_run(self, request: Request, run_id: str) -> HTMLResponse:
        run_path = f"/dags/{REPLAY_DAG}/dagRuns/{quote(run_id, safe='')}"
        with self.airflow(request) as api:
            run = api.get(run_path)
            if run.status_code != 200:
                return _page(
                    request,
                    "Replay run",
                    f'<p class="error" role="alert">No such run ({run.status_code}).</p>',
                )
            state = run.json().get("state")
            tis = api.get(f"{run_path}/taskInstances").json().get("task_instances", [])
            outcome: dict[str, Any] = {}
            for task_id in REPLAY_TASKS_WITH_RESULTS:
                xcom = api.get(f"{run_path}/taskInstances/{task_id}/xcomEntries/return_value")
                if xcom.status_code == 200:
                    outcome[task_id] = _xcom_value(xcom.json().get("value"))
        conf = run.json().get("conf") or {}
        body = (
            f'<p role="status" aria-live="polite">Run <code>{_e(run_id)}</code>: <strong id="run-state">{_e(state)}</strong>'
            + ("" if state in TERMINAL else " (this page refreshes every 2 seconds until the run ends)")
            + "</p>"
            + _table(
                ["Task", "State"],
                (
                    [_e(t.get("task_id")), _e(t.get("state"))]
                    for t in sorted(tis, key=lambda t: t.get("task_id", ""))
                ),
                "Tasks",
            )
            + _render({"filter": conf})
            + _run_results_html(outcome)
        )
        if state in TERMINAL:
            with self.connect() as conn:
                records = replayed_records(conn, run_id)
            body += _ledger_outcome_html(_base(request), records)
        return _page(request, "Replay run", body, refresh=None if state in TERMINAL else 2)

    def month_end_page(self, request: Request) -> HTMLResponse:
        with self.connect() as conn:
            m = month_end(conn, datetime.now(UTC))
        entities = _table(
            [
                "Legal entity",
                "Local date",
                "Business day",
                "Close window",
                "In close",
                "Posting every (min)",
                "ERP periods (as last read)",
                "Closed period policy",
                "Parked, waiting for a period",
            ],
            (
                [
                    _e(e["legal_entity"]),
                    _e(e["today"]),
                    _e(e["business_day"] or "not a business day"),
                    f"{_e(e['close_window'][0])} to {_e(e['close_window'][1])}",
                    "yes" if e["in_close"] else "no",
                    str(e["cadence_minutes"]),
                    "; ".join(f"{_e(p['period'])}: {_e(p['status'])}" for p in e["erp_periods"])
                    or "not read yet",
                    _e(e["closed_period_policy"]),
                    "; ".join(
                        f"{p['n']} ({_money(p['minor'], p['currency'])} {_e(p['currency'])}, oldest {_e(p['oldest'])})"
                        for p in e["parked"]
                    )
                    or "none",
                ]
                for e in m["entities"]
            ),
            "Legal entities",
            numeric=[5],
        )
        totals = m["control_totals"]
        caption = (
            f"Latest control totals: {totals[0]['dag_id']} {totals[0]['run_id']}"
            if totals
            else "No control totals yet"
        )
        stages = _table(
            ["Record type", "Stage", "Records", "Amounts"],
            (
                [
                    _e(t["record_type"]),
                    _e(t["stage"]),
                    str(t["record_count"]),
                    _e(", ".join(f"{c} {a}" for c, a in sorted(t["amounts"].items()))),
                ]
                for t in totals
            ),
            caption,
            numeric=[2],
        )
        checks = _readback_checks(totals)
        read = [p["read_at"] for e in m["entities"] for p in e["erp_periods"]]
        note = (
            '<p class="note">ERP periods are as <code>master_data_sync</code> last read them from the ERP'
            + (f" ({_e(max(read).astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC'))})" if read else "")
            + "; the posting path reads them again before every pass.</p>"
        )
        return _page(request, "Month-end", entities + stages + f"<ul>{''.join(checks)}</ul>" + note)


def _readback_checks(totals: list[dict[str, Any]]) -> list[str]:
    """For the month-end page: per record type, whether the posted totals equal the ERP read-back."""
    by_stage = {(t["record_type"], t["stage"]): t for t in totals}
    checks = []
    for record_type in sorted({t["record_type"] for t in totals}):
        posted, readback = (
            by_stage.get((record_type, "posted")),
            by_stage.get((record_type, "erp_readback")),
        )
        if posted and readback:
            same = (posted["record_count"], posted["amounts"]) == (
                readback["record_count"],
                readback["amounts"],
            )
            checks.append(
                f"<li>{_e(record_type)}: posted vs ERP read-back {'reconciled' if same else 'DIFFERS'}</li>"
            )
        else:
            checks.append(f"<li>{_e(record_type)}: no ERP read-back in this run</li>")
    return checks


def _qs(filters: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in filters.items() if v not in (None, "")}
