"""Event-driven processing of announced time entries and expenses (issue 7).

A run claims the pending inbox batch, then for each announced record, in source order (first
announcement first), re-reads the record from the PSA by id: the webhook body is only a hint,
the PSA is the authority, so a dropped, duplicated or reordered webhook cannot put a stale
version in the ERP. New versions go to staging under the run's key, are validated by the same
``validation.validate_run`` as the batch DAG and posted by the same
``posting.service.post_record_type``; the idempotent ledger makes a record that both paths see
post exactly once. A record the PSA answers 404 for was deleted there: it is marked deleted in
canonical (audited) so its posting is reversed. The batch sweep stays the safety net for
everything a webhook never announced.

No Airflow imports: the flow hands in clients, a DSN and the run id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
import psycopg

from psa_erp_sync.config import Config
from psa_erp_sync.contracts import kinds
from psa_erp_sync.contracts.kinds import REFERENCE_ENDPOINTS
from psa_erp_sync.ods import audit, inbox, jsonb, staging

log = logging.getLogger(__name__)

SOURCE = "psa"
KIND_OF_EVENT = {event: kind.name for event, kind in kinds.BY_EVENT_TYPE.items()}
ENDPOINT_OF_KIND = {name: kind.psa_endpoint for name, kind in kinds.KINDS.items()}
TABLE_OF_KIND = {name: kind.canonical_table for name, kind in kinds.KINDS.items()}
RECORD_TYPE_OF_KIND = {name: kind.record_type for name, kind in kinds.KINDS.items()}


@dataclass
class StreamResult:
    claimed: int = 0
    records: int = 0
    new_versions: int = 0
    already_staged: int = 0
    gone_at_source: int = 0
    reference_refreshed: bool = False
    validated: dict[str, Any] = field(default_factory=dict)
    posted: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _announced(events: Iterable[inbox.Event]) -> list[tuple[str, str]]:
    """Distinct (kind, source id), ordered by each record's first announcement (source order)."""
    first: dict[tuple[str, str], tuple[datetime | None, int]] = {}
    for event in events:
        kind = KIND_OF_EVENT[event.event_type.split(".", 1)[0]]
        key = (kind, event.source_id)
        first.setdefault(key, (event.occurred_at, event.seq))
    return sorted(first, key=lambda k: (first[k][0] is None, first[k][0] or datetime.max, first[k][1]))


def reread(client: Any, kind: str, source_id: str) -> dict[str, Any] | None:
    """The record as the PSA holds it now, or None when the PSA says it has no such record.

    Any other 404 (wrong base URL or route) raises ``PsaEndpointNotFound``: it is never a deletion.
    """
    record: dict[str, Any] | None
    if kind == "time_entry":
        record = client.get_time_entry(int(source_id))
    else:
        record = client.get_expense(int(source_id))
    return record


def check_deletions(
    conn: psycopg.Connection,
    client: Any,
    kind: str,
    gone_ids: list[str],
    *,
    answered: int,
    controls: int = 3,
) -> int:
    """Refuse (``MassDeletionRefused``) deletions that are not plausible; returns how many of
    ``gone_ids`` canonical holds live (the ones a deletion would reverse).

    1. When no re-read of ``kind`` in this run returned a record (``answered`` = 0), up to
       ``controls`` live canonical records (most recently validated first) are re-read: a PSA that
       says "not found" for records it has (a wrong account id) reverses nothing.
    2. The share rule of the sweep (:func:`~psa_erp_sync.validation.time_expense.implausible_deletions`):
       the live records since the earliest gone record's spent date are the whole.
    """
    from psa_erp_sync.validation.time_expense import MassDeletionRefused, implausible_deletions

    table = TABLE_OF_KIND[kind]
    live = conn.execute(
        f"SELECT count(*), min(spent_date) FROM {table}"
        " WHERE source_system = %s AND source_id = ANY(%s) AND NOT is_deleted",
        (SOURCE, gone_ids),
    ).fetchone()
    if live is None or not live[0]:
        return 0
    gone, since = int(live[0]), live[1]
    if answered == 0:
        probes = [
            r[0]
            for r in conn.execute(
                f"SELECT source_id FROM {table} WHERE source_system = %s AND NOT is_deleted"
                " AND NOT (source_id = ANY(%s)) ORDER BY validated_at DESC, source_id LIMIT %s",
                (SOURCE, gone_ids, controls),
            )
        ]
        if probes and all(reread(client, kind, sid) is None for sid in probes):
            raise MassDeletionRefused(
                f"the PSA answers 'not found' for all {len(gone_ids)} announced {ENDPOINT_OF_KIND[kind]}"
                f" and for {len(probes)} records known to exist: wrong account id or base URL?"
                " Refusing to treat them as deleted; fix the psa connection and clear the run."
            )
    row = conn.execute(
        f"SELECT count(*) FROM {table} WHERE source_system = %s AND NOT is_deleted AND spent_date >= %s",
        (SOURCE, since),
    ).fetchone()
    total = int(row[0]) if row else 0
    if implausible_deletions(gone, total):
        raise MassDeletionRefused(
            f"the PSA no longer has {gone} of {total} {ENDPOINT_OF_KIND[kind]} records since {since}"
            " announced in one stream run; refusing to treat them as deleted. Check the PSA; the sweep"
            " applies the same rule."
        )
    return gone


def _lines_params(lines: list[tuple[str, str]], **extra: Any) -> dict[str, Any]:
    """Query parameters for (source id, payload) lines of the PSA: ``ids`` and ``payloads`` in
    step (unnested together), the source system, and ``extra``."""
    return {"ids": [i for i, _ in lines], "payloads": [p for _, p in lines], "system": SOURCE, **extra}


def stage_new_versions(
    conn: psycopg.Connection,
    records: list[dict[str, Any]],
    *,
    run_key: str,
    endpoint: str,
    read_at: datetime | None = None,
) -> tuple[int, int]:
    """Stage versions staging has never seen, under ``run_key``; (new, already staged).

    Versions already staged keep their run key: a batch run that staged the same version
    validates it under its own key, so its control totals stay exact when both paths run at
    once. Their ``fetched_at`` moves forward to ``read_at`` (when the re-reads began; rows a
    batch extract holds locked are skipped, never waited for), so a sweep that began before this
    read does not take the record for deleted; and a
    canonical row a deletion marked *before* ``read_at`` whose version this read got again is
    live again (audited): nothing else would validate that version. The content hash is computed
    exactly as ``ods.staging`` does.
    """
    if not records:
        return 0, 0
    lines = []
    for item in records:
        payload = jsonb.escape_nul(msgspec.json.encode(item))  # kept as text, as staging does
        lines.append((_staged_key(item), payload.decode()))
    new = staging.insert_new_versions(conn, SOURCE, endpoint, lines, run_key=run_key, read_at=read_at)
    if read_at is not None and new < len(records):
        # Never wait for a batch extract that holds these rows (its transaction can last minutes):
        # rows it has locked are being re-read by it anyway.
        staging.touch_fetched(conn, SOURCE, endpoint, lines, read_at=read_at)
        _undelete_reread(conn, lines, endpoint=endpoint, read_at=read_at, run_key=run_key)
    return new, len(records) - new


def _staged_key(item: Any) -> str:
    """The source id a re-read record is staged under, exactly as ``ods.staging`` keys it: a record
    without an id (or not an object) under its content-derived key, for validation to quarantine
    (``SCHEMA_INVALID``) instead of failing the step. Text cannot hold U+0000: it is kept as
    visible ``\\u0000``, as the batch's COPY stores it."""
    source_id = item.get("id") if isinstance(item, dict) else None
    key = str(source_id) if source_id is not None else staging.missing_id_key(item)
    return key.replace("\x00", "\\u0000")


def _undelete_reread(
    conn: psycopg.Connection, lines: list[tuple[str, str]], *, endpoint: str, read_at: datetime, run_key: str
) -> int:
    """Canonical rows marked deleted by a read that began before ``read_at``, whose very version
    the PSA has just answered: the record exists (the later read wins, as in validation)."""
    table = {v: TABLE_OF_KIND[k] for k, v in ENDPOINT_OF_KIND.items()}[endpoint]
    row = conn.execute(
        f"""
        WITH src AS (
            SELECT s.source_id, encode(sha256(convert_to(s.payload::jsonb::text, 'UTF8')), 'hex') AS payload_hash
            FROM unnest(%(ids)s::text[], %(payloads)s::text[]) AS s(source_id, payload)
        ), back AS (
            UPDATE {table} c SET is_deleted = false, source_read_at = %(read_at)s, validated_at = now()
            FROM src
            WHERE c.source_system = %(system)s AND c.source_id = src.source_id AND c.is_deleted
              AND c.version_hash = src.payload_hash AND coalesce(c.source_read_at, '-infinity') < %(read_at)s
            RETURNING c.source_id, to_jsonb(c.*) - 'record' AS image
        ), audited AS (
            {audit.INSERT_CHANGE}
            SELECT 'stream.reread', 'present_at_source', %(table)s, source_id,
                   jsonb_build_object('is_deleted', true), image, %(run_key)s FROM back
        )
        SELECT count(*) FROM back
        """,
        _lines_params(lines, read_at=read_at, table=table, run_key=run_key),
    ).fetchone()
    restored = int(row[0]) if row else 0
    if restored:
        log.info("stream: %d records marked deleted earlier were read again: live again", restored)
    return restored


def latest_reference_keys(conn: psycopg.Connection, max_age: timedelta) -> dict[str, str] | None:
    """Run keys of the newest complete reference extracts, if all are younger than ``max_age``."""
    rows = conn.execute(
        """
        SELECT DISTINCT ON (endpoint) endpoint, run_key, finished_at >= now() - %s
        FROM staging.extract_run
        WHERE source_system = %s AND endpoint = ANY(%s) AND finished_at IS NOT NULL AND mode = 'full'
        ORDER BY endpoint, finished_at DESC
        """,
        (max_age, SOURCE, list(REFERENCE_ENDPOINTS)),
    ).fetchall()
    keys = {endpoint: key for endpoint, key, fresh in rows if fresh}
    return keys if len(keys) == len(REFERENCE_ENDPOINTS) else None


def reference_for(conn: psycopg.Connection, run_keys: dict[str, str], records: list[dict[str, Any]]) -> Any:
    """Like ``PsaReference.from_staging`` for the same run keys, but only the projects, users and
    task assignments the announced records refer to: a handful of rows instead of the firm's
    whole reference, built by the same ``PsaReference.from_rows`` (this sits on the latency path),
    so a malformed reference record is flagged here exactly as in the batch."""
    from psa_erp_sync.validation.fx import RateBook
    from psa_erp_sync.validation.time_expense import PsaReference

    project_ids = sorted({str(_ref_id(r, "project")) for r in records})
    user_ids = sorted({str(_ref_id(r, "user")) for r in records})

    def rows(endpoint: str, where: str, ids: list[str] | None) -> list[tuple[str, str, Any]]:
        selected = f" AND {where} = ANY(%s)" if ids is not None else ""
        return [
            (r[0], r[1], staging.decode_payload(r[2]))  # the payload is text (migration 0040)
            for r in conn.execute(
                "SELECT source_id, payload_hash, payload FROM staging.raw_record"
                " WHERE source_system = %s AND endpoint = %s AND last_run_key = %s" + selected,
                (SOURCE, endpoint, run_keys[endpoint], *([ids] if ids is not None else [])),
            )
        ]

    return PsaReference.from_rows(
        {
            "/v2/projects": rows("/v2/projects", "source_id", project_ids),
            "/v2/users": rows("/v2/users", "source_id", user_ids),
            "/v2/task_assignments": rows(
                "/v2/task_assignments", "staging.try_jsonb(payload)->'project'->>'id'", project_ids
            ),
            "/v2/expense_categories": rows("/v2/expense_categories", "source_id", None),
        },
        RateBook.from_ods(conn),
    )


def _ref_id(record: Any, name: str) -> Any:
    """``record[name]["id"]``, or None when the (hostile) record has no such object: validation
    quarantines it; the reference step must not fail on it."""
    ref = record.get(name) if isinstance(record, dict) else None
    return ref.get("id") if isinstance(ref, dict) else None


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _covers(ref: Any, records: Iterable[dict[str, Any]]) -> bool:
    for record in records:
        project = _ref_id(record, "project")
        user = _ref_id(record, "user")
        # An id that is not an integer cannot be in any reference: validation quarantines the
        # record (SCHEMA_INVALID), and refreshing the whole reference for it would not help.
        # A malformed project or user is known too (as invalid): validation quarantines its
        # entries, and a refresh on every run until the PSA admin fixes it would not help.
        if (_is_id(project) and project not in ref.projects and project not in ref.invalid_projects) or (
            _is_id(user) and user not in ref.users and user not in ref.invalid_users
        ):
            return False
    return True


def reference(
    conn: psycopg.Connection,
    client: Any,
    *,
    records: list[dict[str, Any]],
    run_key_prefix: str,
    as_of: datetime,
    per_page: int,
    max_age: timedelta,
) -> tuple[Any, bool]:
    """The reference to validate against: the newest complete extract when fresh and covering
    every announced record's project and user, else a fresh extract under this run. (ref, refreshed)"""
    from psa_erp_sync.extract import psa as psa_extract
    from psa_erp_sync.validation.time_expense import PsaReference

    keys = latest_reference_keys(conn, max_age)
    if keys is not None:
        ref = reference_for(conn, keys, records)
        if _covers(ref, records):
            return ref, False
    keys = {}
    for endpoint in REFERENCE_ENDPOINTS:
        key = f"{run_key_prefix}{endpoint}"
        window = psa_extract.plan_window(None, mode="full", as_of=as_of, overlap=timedelta(0), sweep_days=0)
        psa_extract.extract_endpoint(
            conn, client, endpoint=endpoint, run_key=key, window=window, per_page=per_page
        )
        keys[endpoint] = key
    return PsaReference.from_staging(conn, keys), True


def mark_gone(
    conn: psycopg.Connection,
    kind: str,
    source_ids: list[str],
    *,
    run_id: str,
    read_at: datetime | None = None,
) -> int:
    """Records the PSA answers "record not found" for were deleted at the source: mark them deleted
    in canonical (audited before/after, as the sweep does), so the planner reverses what the ERP
    holds. ``read_at`` is when the re-reads began (default now): a record some read saw at or after
    that moment is left alone, and the deletion carries it as ``source_read_at``, so only a read
    that began later brings the record back (docs/streaming.md, "Ordering")."""
    from psa_erp_sync.validation.time_expense import DELETION_AUDIT_SQL

    if not source_ids:
        return 0
    table = TABLE_OF_KIND[kind]
    endpoint = ENDPOINT_OF_KIND[kind]
    row = conn.execute(
        f"""
        WITH moment AS (SELECT coalesce(%(read_at)s, now()) AS read_at),
        del AS (
            UPDATE {table} c SET is_deleted = true, source_read_at = m.read_at, validated_at = now()
            FROM moment m
            WHERE c.source_system = %(system)s AND c.source_id = ANY(%(ids)s) AND NOT c.is_deleted
              AND coalesce(c.source_read_at, '-infinity') < m.read_at
              AND NOT EXISTS (
                  SELECT 1 FROM staging.raw_record r
                  WHERE r.source_system = c.source_system AND r.endpoint = %(endpoint)s
                    AND r.source_id = c.source_id AND r.fetched_at >= m.read_at)
            RETURNING c.source_id, to_jsonb(c.*) - 'record' AS image
        ), {DELETION_AUDIT_SQL}
        """,
        {
            "actor": "stream.reread",
            "system": SOURCE,
            "ids": source_ids,
            "table": table,
            "run_id": run_id,
            "read_at": read_at,
            "endpoint": endpoint,
        },
    ).fetchone()
    return int(row[0]) if row else 0


def _db_now(conn: psycopg.Connection) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    assert row is not None
    now: datetime = row[0]
    return now


def _reread_announced(
    conn: psycopg.Connection, psa_client: Any, announced: list[tuple[str, str]]
) -> tuple[dict[str, list[dict[str, Any]]], set[tuple[str, str]]]:
    """Each announced record as the PSA has it now, per kind, and the ones gone at the source
    (their deletion checked)."""
    current: dict[str, list[dict[str, Any]]] = {"time_entry": [], "expense_entry": []}
    gone: set[tuple[str, str]] = set()
    for kind, source_id in announced:
        record = reread(psa_client, kind, source_id)
        if record is None:
            gone.add((kind, source_id))
        else:
            current[kind].append(record)
    for kind in current:
        gone_ids = sorted(sid for k, sid in gone if k == kind)
        if gone_ids:
            check_deletions(conn, psa_client, kind, gone_ids, answered=len(current[kind]))
    return current, gone


def _stage_and_validate(
    conn: psycopg.Connection,
    current: dict[str, list[dict[str, Any]]],
    gone: set[tuple[str, str]],
    *,
    ref: Any,
    config: Config,
    run_id: str,
    run_key_prefix: str,
    as_of: datetime,
    read_at: datetime,
    result: StreamResult,
) -> list[str]:
    """Mark the records gone at the source, stage and validate the re-read ones; the kinds whose
    postings to plan and send."""
    from psa_erp_sync.validation import time_expense as validation

    kinds_to_post = []
    for kind, records in current.items():
        gone_ids = sorted(sid for k, sid in gone if k == kind)
        if gone_ids:
            with conn.transaction():
                mark_gone(conn, kind, gone_ids, run_id=run_id, read_at=read_at)
            kinds_to_post.append(kind)
        if not records:
            continue
        endpoint = ENDPOINT_OF_KIND[kind]
        run_key = f"{run_key_prefix}{endpoint}"
        with conn.transaction():  # committed first: validation streams staging on its own connection
            new, known = stage_new_versions(
                conn, records, run_key=run_key, endpoint=endpoint, read_at=read_at
            )
        result.new_versions += new
        result.already_staged += known
        with conn.transaction():
            verdicts = validation.validate_run(
                conn,
                kind=kind,  # type: ignore[arg-type]
                run_key=run_key,
                ref=ref,
                config=config,
                as_of=as_of,
                dag_run_id=run_id,
            )
            verdicts.check()
        result.validated[kind] = verdicts.as_dict()
        if kind not in kinds_to_post:
            kinds_to_post.append(kind)
    return kinds_to_post


def _post_kinds(
    kinds_to_post: list[str],
    *,
    dsn: str,
    erp_client: Any,
    config: Config,
    engine_settings: Any,
    run_id: str,
    result: StreamResult,
    lock_settings: Any = None,
    source_ids: Mapping[str, list[str]] | None = None,
) -> None:
    """Plan and send the postings of each kind (raises while some are still pending).

    ``source_ids``: the burst's records per kind; each pass is then scoped to them (it plans,
    sends and counts only their postings, and a batch pass holding the lock hands it over between
    its batches: :func:`psa_erp_sync.posting.service.post_record_type`). None: every record.

    ``erp_client``: NetSuite's client or adapter, or a mapping ERP name -> adapter of every routed
    ERP (a transition): one pass per ERP, as the batch task does
    (:func:`psa_erp_sync.posting.service.post_routed`)."""
    from psa_erp_sync.posting.engine import EngineSettings
    from psa_erp_sync.posting.service import post_record_type, post_routed

    settings = engine_settings or EngineSettings.from_config(config, max_concurrency=4, progress_every_s=60.0)
    adapters = dict(erp_client) if isinstance(erp_client, Mapping) else {"netsuite": erp_client}

    for kind in kinds_to_post:
        record_type = RECORD_TYPE_OF_KIND[kind]
        ids = None if source_ids is None else source_ids.get(kind, [])
        # Each pass takes the posting lock of its record type and ERP account (shared with the batch DAG).
        if len(adapters) == 1:
            outcome = post_record_type(
                dsn=dsn,
                client=next(iter(adapters.values())),
                record_type=record_type,
                config=config,
                settings=settings,
                run_id=run_id,
                lock_settings=lock_settings,
                source_ids=ids,
            ).outcome
        else:
            _, outcome = post_routed(
                dsn=dsn,
                adapters=adapters,
                record_type=record_type,
                config=config,
                settings_for=lambda _erp: settings,
                run_id=run_id,
                lock_settings=lock_settings,
                source_ids=ids,
            )
        result.posted[record_type] = outcome
        if outcome.get("still_pending"):
            raise RuntimeError(
                f"{outcome['still_pending']} {record_type} postings still pending; a retry resumes"
            )


def _ids_by_kind(announced: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The burst's records (announced, gone at the source or not), per kind."""
    ids: dict[str, list[str]] = {}
    for kind, source_id in announced:
        ids.setdefault(kind, []).append(source_id)
    return ids


def _settle(
    conn: psycopg.Connection, events: list[inbox.Event], gone: set[tuple[str, str]], *, run_id: str
) -> None:
    """Mark each claimed event done: synced, or its record gone at the source."""
    outcomes = {}
    for event in events:
        kind = KIND_OF_EVENT[event.event_type.split(".", 1)[0]]
        outcomes[event.delivery_id] = (
            "gone_at_source" if (kind, event.source_id) in gone else f"synced:{RECORD_TYPE_OF_KIND[kind]}"
        )
    inbox.settle(conn, outcomes, run_id=run_id, source_system=SOURCE)


def _log(result: StreamResult) -> None:
    log.info(
        "inbox: %d events, %d records (%d new versions, %d gone at source), posted %s",
        result.claimed,
        result.records,
        result.new_versions,
        result.gone_at_source,
        {rt: o.get("posted") for rt, o in result.posted.items()},
    )


def process_inbox(
    *,
    dsn: str,
    psa_client: Any,
    erp_client: Any,
    config: Config,
    run_id: str,
    run_key_prefix: str,
    as_of: datetime,
    engine_settings: Any = None,
    reference_max_age: timedelta = timedelta(minutes=15),
    limit: int = 5000,
    clock: Callable[[], float] = time.monotonic,
    claim_min_age: timedelta = timedelta(0),
) -> StreamResult:
    """Claim the pending time & expense events and bring the ERP up to date with what they announce.

    ``run_key_prefix`` is ``"{dag_id}/{run_id}"``: staging keys become ``{prefix}{endpoint}``.
    Idempotent per run: a retry re-claims this run's events and redoes the same steps.
    ``claim_min_age``: claim pending events only once that old (the safety net leaves fresh events
    to the long-running consumer, :mod:`psa_erp_sync.stream.consumer`).
    """
    started = clock()
    # Autocommit: each ``conn.transaction()`` below is a real transaction that commits, never a
    # savepoint inside an implicit one (validation reads staging on a second connection).
    with psycopg.connect(dsn, autocommit=True) as conn:
        events = inbox.claim(
            conn,
            run_id=run_id,
            source_system=SOURCE,
            event_types=inbox.TIME_EXPENSE_EVENTS,
            limit=limit,
            min_age=claim_min_age,
        )
        return process_claimed(
            conn,
            events,
            Burst(
                dsn=dsn,
                psa_client=psa_client,
                erp_client=erp_client,
                config=config,
                run_id=run_id,
                run_key_prefix=run_key_prefix,
                as_of=as_of,
                engine_settings=engine_settings,
                reference_max_age=reference_max_age,
            ),
            started=started,
            clock=clock,
        )


@dataclass(frozen=True)
class Burst:
    """What processing a claimed batch needs besides the events: the run's ids, the clients (kept
    warm by a long-running consumer) and the settings. ``run_id`` is the claimer: the events'
    ``claimed_by``, the ledger attempts' run id."""

    dsn: str
    psa_client: Any
    erp_client: Any
    config: Config
    run_id: str
    run_key_prefix: str
    as_of: datetime
    engine_settings: Any = None
    reference_max_age: timedelta = timedelta(minutes=15)
    lock_settings: Any = None


def process_claimed(
    conn: psycopg.Connection,
    events: list[inbox.Event],
    burst: Burst,
    *,
    started: float,
    clock: Callable[[], float] = time.monotonic,
) -> StreamResult:
    """Re-read, stage, validate and post what ``events`` (claimed by ``burst.run_id``) announce,
    then settle them. ``conn``: an autocommit connection (a consumer keeps one open)."""
    result = StreamResult(claimed=len(events))
    result.seconds["claim"] = round(clock() - started, 3)
    if not events:
        return result
    announced = _announced(events)
    result.records = len(announced)
    t = clock()
    # Every re-read below begins after this moment (the ODS's clock, as the batch's extracts use).
    read_at = _db_now(conn)
    current, gone = _reread_announced(conn, burst.psa_client, announced)
    result.gone_at_source = len(gone)
    result.seconds["reread"] = round(clock() - t, 3)
    t = clock()
    ref, result.reference_refreshed = reference(
        conn,
        burst.psa_client,
        records=current["time_entry"] + current["expense_entry"],
        run_key_prefix=burst.run_key_prefix,
        as_of=burst.as_of,
        per_page=burst.config.mappings.extract.per_page,
        max_age=burst.reference_max_age,
    )
    result.seconds["reference"] = round(clock() - t, 3)
    t = clock()
    kinds_to_post = _stage_and_validate(
        conn,
        current,
        gone,
        ref=ref,
        config=burst.config,
        run_id=burst.run_id,
        run_key_prefix=burst.run_key_prefix,
        as_of=burst.as_of,
        read_at=read_at,
        result=result,
    )
    result.seconds["stage_validate"] = round(clock() - t, 3)
    t = clock()
    _post_kinds(
        kinds_to_post,
        dsn=burst.dsn,
        erp_client=burst.erp_client,
        config=burst.config,
        engine_settings=burst.engine_settings,
        run_id=burst.run_id,
        result=result,
        lock_settings=burst.lock_settings,
        source_ids=_ids_by_kind(announced),
    )
    result.seconds["post"] = round(clock() - t, 3)
    _settle(conn, events, gone, run_id=burst.run_id)
    result.seconds["total"] = round(clock() - started, 3)
    _log(result)
    return result
