"""Idempotency keys are deterministic from record identity, approved version, action and sequence."""

from __future__ import annotations

from psa_erp_sync.posting import ledger
from psa_erp_sync.posting.engine import batch_key


def test_key_is_deterministic_and_sensitive_to_each_part() -> None:
    base = ("timebill", "psa", "123", "v1hash", "post", 0)
    key = ledger.idempotency_key(*base)
    assert key == ledger.idempotency_key(*base)
    for i, other in enumerate(["expensereport", "crm", "124", "v2hash", "adjust", 1]):
        changed = list(base)
        changed[i] = other
        assert ledger.idempotency_key(*changed) != key  # type: ignore[arg-type]


def test_batch_key_depends_on_the_set_not_the_order() -> None:
    def posting(k: str) -> ledger.Posting:
        return ledger.Posting(k, "timebill", "psa", k, "v", f"psa-te-{k}", "post", "pending", {})

    a, b, c = posting("a"), posting("b"), posting("c")
    assert batch_key([a, b]) == batch_key([b, a])
    assert batch_key([a, b]) != batch_key([a, c])
