-- 0004: the webhook inbox in use (issue 7). Forward-only: never edit; add a new file.
-- inbox.event exists since 0001; this adds source order, claim bookkeeping, a NOTIFY on arrival
-- and the quarantine of authentic but malformed deliveries.

ALTER TABLE inbox.event ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;
ALTER TABLE inbox.event ADD CONSTRAINT event_seq_key UNIQUE (seq);
ALTER TABLE inbox.event ADD COLUMN attempts integer NOT NULL DEFAULT 0;
ALTER TABLE inbox.event ADD COLUMN outcome text;  -- what processing did: posted, unchanged, gone_at_source, ...
COMMENT ON COLUMN inbox.event.seq IS 'Arrival order; with occurred_at it gives the source order per record.';
CREATE INDEX event_claimable_idx ON inbox.event (source_system, event_type, seq) WHERE status IN ('pending', 'claimed');

-- Every committed arrival wakes the listening trigger; the payload names only source and event type.
CREATE FUNCTION inbox.notify_arrival() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('psa_erp_sync_inbox', NEW.source_system || ':' || NEW.event_type);
    RETURN NULL;
END $$;
CREATE TRIGGER event_arrival AFTER INSERT ON inbox.event
    FOR EACH ROW EXECUTE FUNCTION inbox.notify_arrival();

CREATE TABLE inbox.quarantine (
    delivery_id    text        PRIMARY KEY,      -- the sender's delivery id (retries update the row)
    source_system  text        NOT NULL,
    event_type     text,                         -- as announced in the header, if it was readable
    reason_code    text        NOT NULL,         -- INVALID_UTF8, INVALID_JSON, SCHEMA, HEADER_BODY_MISMATCH, ...
    detail         jsonb       NOT NULL DEFAULT '{}'::jsonb,  -- field paths and error types, never values
    body           bytea       NOT NULL,         -- the raw body as received (it was signed: kept for replay)
    content_type   text,
    received_at    timestamptz NOT NULL DEFAULT now(),
    last_seen      timestamptz NOT NULL DEFAULT now(),
    occurrences    integer     NOT NULL DEFAULT 1,
    status         text        NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'replayed', 'ignored'))
);
COMMENT ON TABLE inbox.quarantine IS 'Authentic (signature verified) deliveries that could not be parsed or validated: kept with a reason, never dropped.';
