-- 0009: bad input never stops a run (issue 13). Repairs what earlier versions stored and adds the
-- guards the code now relies on.

-- An empty first run stored '-infinity' as the high watermark, and every later run then failed
-- reading it ("timestamp too small"). Such a row only ever means "nothing seen yet": forget it, so
-- the next run reads everything (what a first run does). last_sweep_at goes with it: the next
-- automatic run is then a sweep, which is harmless.
DELETE FROM staging.watermark WHERE NOT isfinite(high_watermark);

-- One record stamped in the future moved the watermark past the time it was written (greatest()
-- kept it there), so every incremental read since came back empty. Restart such an endpoint from
-- the start of its last extract whose window was not in the future (the run that saw the record):
-- everything changed since is read again, and staging dedupes what was already there.
UPDATE staging.watermark w
   SET high_watermark = h.healthy_start, updated_at = now()
  FROM (
        SELECT w2.source_system, w2.endpoint,
               (SELECT max(r.started_at) FROM staging.extract_run r
                 WHERE r.source_system = w2.source_system AND r.endpoint = w2.endpoint
                   AND (r.window_from IS NULL OR r.window_from <= r.started_at)) AS healthy_start
          FROM staging.watermark w2
         WHERE w2.high_watermark > w2.updated_at
       ) h
 WHERE w.source_system = h.source_system AND w.endpoint = h.endpoint AND h.healthy_start IS NOT NULL;
-- No extract on record to restart from: read everything again.
DELETE FROM staging.watermark WHERE high_watermark > updated_at;

ALTER TABLE staging.watermark
    ADD CONSTRAINT watermark_high_finite CHECK (isfinite(high_watermark));
COMMENT ON COLUMN staging.watermark.high_watermark IS
    'Newest updated_at seen, capped at the start of the extract that saw it; no row means "read everything".';

-- A staged payload's date as a date, or NULL when it is not one: queries over quarantined
-- payloads (whose dates may be anything) must never fail on a cast.
CREATE FUNCTION staging.try_date(value text) RETURNS date
    LANGUAGE plpgsql STABLE PARALLEL SAFE AS
$$
BEGIN
    RETURN value::date;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
COMMENT ON FUNCTION staging.try_date(text) IS 'value::date, or NULL when value is not a date (hostile staged payloads).';
