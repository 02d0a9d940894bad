"""Cross-references per target ERP (``routing.xref``), frozen at a legal entity's cutover.

Our ids map to each ERP's ids (customers, jobs, employees, company codes, cost centres, activity
types) separately per ERP. When a legal entity leaves an ERP (a cutover in
``config/erp_routing.yaml``), that ERP's mappings of the entity become history: the old ERP's
records, corrections of them and the parallel-run reconciliation all depend on them. From the
cutover day on, a change of such a mapping is refused (:class:`XrefFrozen`); a new entity mapping
belongs in the new ERP's cross-reference.

"On or after the cutover" is decided by the caller's business date (``as_of``: the run's date),
never by the clock.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg

from psa_erp_sync.routing.route import Router


class XrefFrozen(RuntimeError):
    """A mapping change for a legal entity that has left this ERP, on or after its cutover."""


def frozen_from(router: Router, target_erp: str, legal_entity: str) -> date | None:
    """The first day on which ``legal_entity``'s mappings in ``target_erp`` are frozen: its latest
    cutover away from that ERP (None while the entity still routes there or never left it)."""
    if legal_entity not in router.active.legal_entities:
        return None
    left = [day for day, old, new in router.cutovers(legal_entity) if old.erp == target_erp != new.erp]
    back = [day for day, old, new in router.cutovers(legal_entity) if new.erp == target_erp != old.erp]
    if not left or (back and max(back) > max(left)):
        return None
    return max(left)


def _refusal(
    target_erp: str,
    legal_entity: str,
    kind: str,
    our_id: str,
    held: str | None,
    wanted: str,
    frozen: date,
    as_of: date,
) -> XrefFrozen:
    change = f"from {held} to {wanted}" if held is not None else f"(new mapping to {wanted})"
    return XrefFrozen(
        f"cross-reference frozen: {legal_entity} left {target_erp} at its cutover on {frozen.isoformat()};"
        f" the {target_erp} {kind} mapping of {our_id} cannot change {change} on {as_of.isoformat()}."
        " The old ERP's mappings are history after cutover: map the record in the new ERP's"
        " cross-reference, or have finance amend config/erp_routing.yaml."
    )


def record(
    conn: psycopg.Connection[Any],
    router: Router,
    *,
    target_erp: str,
    legal_entity: str,
    kind: str,
    our_id: str,
    erp_id: str,
    as_of: date,
    run_id: str,
) -> bool:
    """Write ``our_id -> erp_id`` in ``target_erp``'s cross-reference for ``legal_entity``; True
    when it changed. Raises :class:`XrefFrozen` for a change on or after the entity's cutover away
    from ``target_erp`` (the same mapping again is no change, and allowed)."""
    frozen = frozen_from(router, target_erp, legal_entity)
    row = conn.execute(
        "SELECT erp_id, frozen_at FROM routing.xref WHERE target_erp = %s AND legal_entity = %s"
        " AND kind = %s AND our_id = %s FOR UPDATE",
        (target_erp, legal_entity, kind, our_id),
    ).fetchone()
    held, stored = (row[0], row[1]) if row else (None, None)
    if held == erp_id:
        return False
    stop = min((d for d in (frozen, stored) if d is not None), default=None)
    if stop is not None and as_of >= stop:
        raise _refusal(target_erp, legal_entity, kind, our_id, held, erp_id, stop, as_of)
    conn.execute(
        """
        INSERT INTO routing.xref (target_erp, legal_entity, kind, our_id, erp_id, frozen_at, updated_run_id)
        VALUES (%s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (target_erp, legal_entity, kind, our_id) DO UPDATE SET erp_id = EXCLUDED.erp_id,
            frozen_at = EXCLUDED.frozen_at, updated_at = now(), updated_run_id = EXCLUDED.updated_run_id
        """,
        (target_erp, legal_entity, kind, our_id, erp_id, frozen, run_id),
    )
    return True


def freeze_at_cutover(conn: psycopg.Connection[Any], router: Router) -> int:
    """Stamp ``frozen_at`` on every mapping of an entity that left its ERP (run when the routing
    file gains a cutover); returns how many rows changed."""
    changed = 0
    for entity in router.active.legal_entities:
        for erp in {old.erp for _, old, _ in router.cutovers(entity)}:
            day = frozen_from(router, erp, entity)
            cur = conn.execute(
                "UPDATE routing.xref SET frozen_at = %s WHERE target_erp = %s AND legal_entity = %s"
                " AND frozen_at IS DISTINCT FROM %s",
                (day, erp, entity, day),
            )
            changed += cur.rowcount
    return changed
