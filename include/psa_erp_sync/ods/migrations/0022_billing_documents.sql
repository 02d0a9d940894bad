-- Invoices and credit memos planned from ready billing events (docs/billing.md "Invoices exactly
-- once"). A document is planned from a group of ready events and its membership is frozen: the
-- document, its lines, its ledger.posting row (record_type invoice / creditmemo) and the events'
-- move ready -> invoiced are written in ONE transaction, before the ERP is called. The document_ref
-- is the ERP external id, derived from the member events, so the same events always make the same
-- document and an upsert by external id can never create a second one.
CREATE TABLE billing.document (
    document_ref     text        PRIMARY KEY,   -- = ERP externalId; 'inv-' / 'cm-' + hash of the member event refs
    doc_type         text        NOT NULL CHECK (doc_type IN ('invoice', 'creditmemo')),
    group_key        text        NOT NULL,
    customer_ref     text        NOT NULL,
    project_ref      text        NOT NULL,
    legal_entity     text        NOT NULL,
    currency         char(3)     NOT NULL,
    cycle            text        NOT NULL,
    credits_document text        REFERENCES billing.document (document_ref),  -- a credit memo: the invoice it credits (createdFrom)
    doc_date         date        NOT NULL,      -- the latest member event date (deterministic)
    period           text,                      -- the ERP posting period chosen by the closed-period policy
    total_minor      bigint      NOT NULL CHECK (total_minor >= 0),  -- a credit memo's total is positive too
    line_count       integer     NOT NULL CHECK (line_count > 0),
    members_hash     text        NOT NULL,      -- the ledger row's source_version
    idempotency_key  text        NOT NULL REFERENCES ledger.posting (idempotency_key),
    erp_internal_id  text,
    state            text        NOT NULL DEFAULT 'planned' CHECK (state IN ('planned', 'parked', 'posted', 'rejected')),
    run_id           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((doc_type = 'creditmemo') = (credits_document IS NOT NULL))
);
COMMENT ON TABLE billing.document IS 'Invoices and credit memos planned from ready billing events; membership frozen once planned; state mirrors the posting ledger (planned -> posted | parked | rejected).';
CREATE INDEX document_project_idx ON billing.document (project_ref, legal_entity);
CREATE INDEX document_state_idx ON billing.document (doc_type, state);

-- One line per member event, ever: an event is on at most one document (the unique event_ref).
CREATE TABLE billing.document_line (
    document_ref  text    NOT NULL REFERENCES billing.document (document_ref),
    line_no       integer NOT NULL CHECK (line_no > 0),
    event_ref     text    NOT NULL UNIQUE REFERENCES billing.event (event_ref),
    amount_minor  bigint  NOT NULL,             -- the event's signed amount (a credit line is negative)
    PRIMARY KEY (document_ref, line_no)
);
COMMENT ON TABLE billing.document_line IS 'The frozen membership of a billing document: one row per event, an event on one document only.';

ALTER TABLE billing.event
    ADD CONSTRAINT event_document_fk FOREIGN KEY (document_ref) REFERENCES billing.document (document_ref);
