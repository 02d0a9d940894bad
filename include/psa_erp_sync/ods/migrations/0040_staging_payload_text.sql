-- 0040: staged payloads as the text received, not jsonb (issue 16, deliverable 3). Forward-only:
-- never edit; add a new file.
--
-- Parsing every staged payload into jsonb on the write path cost as much as the rest of a durable
-- keyed write (docs/performance.md, "Staging: where the time goes"): a bare COPY of the same rows
-- into a jsonb table was 0.37-0.40 x the same rows into a text table. The payload is now stored as
-- it arrived (the PSA extract: the item's bytes as sent; decoded items: the canonical jsonb text
-- they were stored as before), and parsed by whoever reads it: validation, the stream and the
-- reference data decode it with msgspec; SQL reads it through staging.try_jsonb below.
--
-- Existing rows keep their content and their hash: the new text is the jsonb's canonical text,
-- which is exactly what their hash was computed over (payload_hash = sha256(payload) for every
-- row staged before 0040 and for every decoded item after it). The dedupe key (source id, content
-- hash) is unchanged; the table and its indexes are rewritten once.
ALTER TABLE staging.raw_record ALTER COLUMN payload TYPE text USING payload::text;

-- Indexes, each for a reader (measured: docs/performance.md, "Staging: where the time goes"):
-- the primary key is the dedupe key and serves every lookup by source id (trace, the stream's
-- deletion check, the sweep's read-since check, touch_fetched); raw_record_run_idx (last_run_key)
-- is how validation, the reference data and the sweep find a run's versions among every version
-- ever staged, kept. raw_record_fetched_idx exists only for retention, which drops old versions
-- of the endpoints config/retention.yaml lists (people: /v2/users), never time entries or
-- expenses (docs/retention.md): it no longer indexes those two, which are nearly every staged row
-- and the extract's hot path. A retention rule for them would still work, by a scan.
DROP INDEX staging.raw_record_fetched_idx;
CREATE INDEX raw_record_fetched_idx ON staging.raw_record (source_system, endpoint, fetched_at)
    WHERE endpoint NOT IN ('/v2/time_entries', '/v2/expenses');
COMMENT ON COLUMN staging.raw_record.payload IS
    'The payload as received (JSON text, U+0000 escapes kept as visible text); parse on read: staging.try_jsonb(payload).';

-- A staged payload as jsonb, or NULL when jsonb cannot hold it (a number beyond numeric, a hostile
-- payload): SQL over staged payloads must never fail on one record, as staging.try_date. Not
-- parallel safe: its exception block is a subtransaction, which a parallel worker cannot start
-- ("cannot start subtransactions during a parallel operation" on a scan of the whole table).
CREATE FUNCTION staging.try_jsonb(value text) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL UNSAFE AS
$$
BEGIN
    RETURN value::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION staging.try_jsonb(text) IS 'value::jsonb, or NULL when value is not JSON jsonb can hold (staged payloads are text since 0040).';
