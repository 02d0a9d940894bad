-- 0026: routing by legal entity and posting date (issue 15, deliverable 3). Forward-only: never
-- edit; add a new file.
--
-- Every ledger row names the ERP and account it goes to and the version of config/erp_routing.yaml
-- that routed it (include/psa_erp_sync/routing/, docs/multi-erp.md "Routing and cutover"). Rows
-- written before routing existed went to NetSuite, the only ERP then: the constant default says so
-- without rewriting the table (a constant default is stored in the catalogue).
ALTER TABLE ledger.posting
    ADD COLUMN target_erp text NOT NULL DEFAULT 'netsuite',
    ADD COLUMN erp_account text,
    ADD COLUMN route_version integer;
COMMENT ON COLUMN ledger.posting.target_erp IS
    'ERP this posting goes to (a name of erps in config/erp_routing.yaml), routed by posting date.';
COMMENT ON COLUMN ledger.posting.erp_account IS
    'Account of target_erp; NULL: the ERP connection''s own account.';
COMMENT ON COLUMN ledger.posting.route_version IS
    'Version of config/erp_routing.yaml that routed it; NULL for rows planned before routing.';

CREATE SCHEMA IF NOT EXISTS routing;
COMMENT ON SCHEMA routing IS 'Per-ERP cross-references, frozen at a legal entity''s cutover.';

-- Our ids <-> one ERP's ids, per legal entity: customers, jobs, employees, company codes, cost
-- centres, activity types. frozen_at is the cutover day on which the entity left this ERP: from
-- that day on the mapping is history (what the old ERP holds) and a change is refused.
CREATE TABLE routing.xref (
    target_erp     text        NOT NULL,
    legal_entity   text        NOT NULL,
    kind           text        NOT NULL,
    our_id         text        NOT NULL,
    erp_id         text        NOT NULL,
    frozen_at      date,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_run_id text,
    PRIMARY KEY (target_erp, legal_entity, kind, our_id)
);
COMMENT ON TABLE routing.xref IS
    'Cross-reference per target ERP (our id -> ERP id); frozen at the entity''s cutover away from that ERP.';
