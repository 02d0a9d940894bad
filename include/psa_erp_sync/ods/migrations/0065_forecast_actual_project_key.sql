-- 0065: the forecast actuals' cells carry an integer project key (issue 16, deliverable 6,
-- forecast part). Forward-only: never edit; add a new file.
--
-- A refresh read the ~1.2 M whole-month cells of forecast.actual_month joined on their text
-- project_ref to the refresh's project codes: ~0.5 s of PostgreSQL CPU at 50k projects x 12
-- months (docs/performance.md "perf-forecast10"). forecast.actual_project_key gives each project
-- ref an integer key, once and for good (rows are only added, never changed or removed); the
-- catch-up that writes actual_month adds the refs of the cells it writes first (under the actuals'
-- lock) and stores the key on every cell, so the refresh reads the cells with their key and maps
-- the registry's keys to its own codes on the client. The backfill below keys every ref already
-- in the actuals.

CREATE TABLE forecast.actual_project_key (
    project_key integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_ref text NOT NULL UNIQUE
);
COMMENT ON TABLE forecast.actual_project_key IS
    'An integer key per project ref of the forecast actuals (forecast.actual_month.project_key); rows are only added.';

INSERT INTO forecast.actual_project_key (project_ref)
SELECT project_ref FROM forecast.actual_month
UNION
SELECT project_ref FROM forecast.actual_source
ORDER BY 1;

ALTER TABLE forecast.actual_month ADD COLUMN project_key integer;
UPDATE forecast.actual_month a SET project_key = k.project_key
FROM forecast.actual_project_key k WHERE k.project_ref = a.project_ref;
ALTER TABLE forecast.actual_month ALTER COLUMN project_key SET NOT NULL;
COMMENT ON COLUMN forecast.actual_month.project_key IS
    'forecast.actual_project_key.project_key of project_ref.';
