-- 0013: an ingress that fails safe, and retention of personal data (issue 13, items 10 and 11).
-- Forward-only: never edit; add a new file.

-- Delivery ids are each sender's own: unique per source, not across sources.
ALTER TABLE inbox.event DROP CONSTRAINT event_pkey;
ALTER TABLE inbox.event ADD PRIMARY KEY (source_system, delivery_id);
ALTER TABLE inbox.event ADD COLUMN payload_pseudonymised_at timestamptz;
COMMENT ON COLUMN inbox.event.payload_pseudonymised_at IS
    'Set by the retention job when the payload was cut down to its envelope (delivery id, event, time, record id).';

-- Quarantine rows are keyed by what the signature covers (the body; the timestamp only dates the
-- signing and changes on every retry), not by the unsigned delivery-id header, and a stored body
-- is never overwritten. Rows of the old key that hold the same body are merged first.
ALTER TABLE inbox.quarantine ADD COLUMN body_sha256 text;
UPDATE inbox.quarantine SET body_sha256 = encode(sha256(body), 'hex');
WITH ranked AS (
    SELECT delivery_id,
           row_number() OVER w AS rn,
           sum(occurrences) OVER (PARTITION BY source_system, body_sha256) AS total,
           max(last_seen) OVER (PARTITION BY source_system, body_sha256) AS seen
    FROM inbox.quarantine
    WINDOW w AS (PARTITION BY source_system, body_sha256 ORDER BY received_at, delivery_id)
), kept AS (
    UPDATE inbox.quarantine q SET occurrences = r.total, last_seen = r.seen
    FROM ranked r WHERE q.delivery_id = r.delivery_id AND r.rn = 1
)
DELETE FROM inbox.quarantine q USING ranked r WHERE q.delivery_id = r.delivery_id AND r.rn > 1;
ALTER TABLE inbox.quarantine ALTER COLUMN body_sha256 SET NOT NULL;
ALTER TABLE inbox.quarantine DROP CONSTRAINT quarantine_pkey;
ALTER TABLE inbox.quarantine ADD PRIMARY KEY (source_system, body_sha256);
ALTER TABLE inbox.quarantine ADD COLUMN last_delivery_id text;
ALTER TABLE inbox.quarantine ADD COLUMN body_purged_at timestamptz;
COMMENT ON COLUMN inbox.quarantine.delivery_id IS 'Delivery-id header of the first sighting (the header is not signed).';
COMMENT ON COLUMN inbox.quarantine.last_delivery_id IS 'Delivery-id header of the latest sighting.';
COMMENT ON COLUMN inbox.quarantine.body_sha256 IS 'sha256 of the raw body: the key, and the exception item''s source id.';
COMMENT ON COLUMN inbox.quarantine.body_purged_at IS
    'Set by the retention job when the body was dropped (body is then empty; hash, reason and dates stay).';
-- What the retention job scans (include/psa_erp_sync/ods/retention.py).
CREATE INDEX quarantine_retention_idx ON inbox.quarantine (last_seen) WHERE body_purged_at IS NULL;
CREATE INDEX event_retention_idx ON inbox.event (received_at) WHERE payload_pseudonymised_at IS NULL;
CREATE INDEX raw_record_fetched_idx ON staging.raw_record (source_system, endpoint, fetched_at);

