-- Owner digests (docs/operations.md "Owners notified"): each open exception item is announced to
-- its owner once. An item that occurs again, or is reopened, is not announced again; an item that
-- was resolved and comes back as a new row is.
ALTER TABLE exceptions.item ADD COLUMN notified_at timestamptz;
-- Items opened before this migration were never announced; they are not announced now either
-- (a first digest of a backlog of months would tell nobody anything new).
UPDATE exceptions.item SET notified_at = now() WHERE status = 'open';
CREATE INDEX item_unnotified_idx ON exceptions.item (owner) WHERE status = 'open' AND notified_at IS NULL;

-- One row per digest sent: owner, run, channels, counts. No personal data (counts and codes only).
CREATE TABLE exceptions.notification (
    id          bigserial   PRIMARY KEY,
    owner       text        NOT NULL,
    dag_id      text        NOT NULL,
    run_id      text        NOT NULL,
    channels    text[]      NOT NULL,
    items       integer     NOT NULL CHECK (items > 0),
    summary     jsonb       NOT NULL,              -- counts by kind and reason, amounts per currency
    sent_at     timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE exceptions.notification IS 'Owner digests sent: one row per owner and run that left new exception items.';
CREATE INDEX notification_owner_idx ON exceptions.notification (owner, sent_at);
