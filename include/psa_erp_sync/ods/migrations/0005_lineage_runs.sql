-- Which OpenLineage run each step of each DAG run had, so one record can be traced from the PSA
-- to the ERP and the forecast with the lineage run id of every step (`python -m psa_erp_sync.trace`).
CREATE SCHEMA IF NOT EXISTS lineage;
COMMENT ON SCHEMA lineage IS 'OpenLineage run ids of our task runs, for the per-record trace.';

CREATE TABLE lineage.task_run (
    dag_id          text        NOT NULL,
    run_id          text        NOT NULL,       -- Airflow DAG run id
    task_id         text        NOT NULL,
    map_index       integer     NOT NULL DEFAULT -1,
    try_number      integer     NOT NULL,
    step            text        NOT NULL,       -- what the task did, e.g. extract:/v2/time_entries, validate:time_entry, post:timebill
    ol_run_id       text,                       -- the task instance's OpenLineage run id (null when it could not be computed)
    ol_job_namespace text,
    ol_job_name     text        NOT NULL,       -- {dag_id}.{task_id}
    started_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (dag_id, run_id, task_id, map_index, try_number)
);
COMMENT ON TABLE lineage.task_run IS 'One row per try of each of our tasks: the OpenLineage run id its events carry, and the step it performed.';
CREATE INDEX task_run_step_idx ON lineage.task_run (run_id, step);
