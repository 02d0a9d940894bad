-- The schedule's hours as integer centi-hours, stored (issue 16, deliverable 6).
--
-- The forecast refresh reads every planned row after the as-of date (1.8 M at 50,000 projects x
-- 12 months) and took its hours as ``round(hours * 100)::bigint``: two numeric operations per
-- row on every refresh, ~0.3 s of PostgreSQL CPU of the read's ~1.3 s (docs/performance.md,
-- "perf-forecast5"). The same value is now computed once, when the extract writes the row, and
-- the refresh reads the integer. ``hours`` stays the column of record (numeric(9,2) >= 0, so
-- ``hours * 100`` is a whole number and the rounding never changes it); writers name their
-- columns and do not write this one.
ALTER TABLE forecast.src_schedule
    ADD COLUMN hours_centi bigint GENERATED ALWAYS AS (round(hours * 100)::bigint) STORED;
COMMENT ON COLUMN forecast.src_schedule.hours_centi IS
    'round(hours * 100): the planned hours in centi-hours, as the forecast reads them (generated).';
