-- 0032: the parallel run (issue 15, deliverable 3). Forward-only: never edit; add a new file.
--
-- During a parallel-run window (config/erp_routing.yaml, `parallel_run` of a cutover) every record
-- of the entity dated in the window is posted to the primary ERP and, as a shadow, to the
-- secondary (include/psa_erp_sync/posting/planner.py, docs/multi-erp.md "Parallel run"). A shadow
-- row is an ordinary ledger row of the secondary ERP (its own idempotency key, state machine,
-- attempts and read-back); `shadow` keeps the record's two lanes apart: the primary's planning,
-- held amounts, sequence numbers and settled exceptions never see a shadow row, and the other way
-- round. A constant default is stored in the catalogue: no table rewrite.
ALTER TABLE ledger.posting ADD COLUMN shadow boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN ledger.posting.shadow IS
    'A parallel run''s copy of the record to the secondary ERP (target_erp); false: the record''s own lane.';
CREATE INDEX posting_shadow_idx ON ledger.posting (record_type, legal_entity, source_system, source_id)
    WHERE shadow;

-- The reconciliation of a parallel run from both ERPs' read-backs
-- (include/psa_erp_sync/reconcile/parallel_run.py): one row per difference found, per legal entity x
-- period x project x ERP x currency, in integer minor units, naming the records of that line. A
-- clean check writes no difference row, only its run row.
CREATE TABLE routing.parallel_check (
    check_id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id        text        NOT NULL,
    legal_entity  text        NOT NULL,
    first_day     date        NOT NULL,
    last_day      date        NOT NULL,
    primary_erp   text        NOT NULL,
    secondary_erp text        NOT NULL,
    compared      integer     NOT NULL,
    differences   integer     NOT NULL,
    checked_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE routing.parallel_check IS
    'Each reconciliation of a parallel-run window: lines compared and differences found.';

CREATE TABLE routing.parallel_difference (
    check_id         bigint NOT NULL REFERENCES routing.parallel_check (check_id),
    kind             text   NOT NULL CHECK (kind IN ('ledger_vs_erp', 'primary_vs_secondary')),
    legal_entity     text   NOT NULL,
    period           text   NOT NULL,
    project          text   NOT NULL,
    erp              text   NOT NULL,
    currency         text   NOT NULL,
    expected_minor   bigint,           -- the ledger (ledger_vs_erp) or the primary ERP; NULL: no line
    held_minor       bigint,           -- the ERP's read-back (or the secondary); NULL: no line
    difference_minor bigint NOT NULL,
    records          jsonb  NOT NULL DEFAULT '[]'  -- PSA source ids whose amounts differ on this line
);
COMMENT ON TABLE routing.parallel_difference IS
    'A difference of a parallel-run reconciliation, to the minor unit, with the records behind it.';
CREATE INDEX parallel_difference_check_idx ON routing.parallel_difference (check_id);
