-- 0033: where each won opportunity's ERP job was written (issue 15, deliverable 6). Forward-only.
--
-- During a transition the project setup writes each job to the ERP its legal entity routes to on the
-- run's date (include/psa_erp_sync/masterdata/erp_targets.py, RoutedErpWriter). The PSA-link upsert
-- that follows may run in a later run (after a crash, or a PSA outage); it must go to the ERP that
-- holds the job, which this column records. NULL: a job written before this migration, or by a
-- NetSuite-only setup (the link then goes where the entity routes on the later run's date).
ALTER TABLE master.project_setup ADD COLUMN erp_name text;
COMMENT ON COLUMN master.project_setup.erp_name IS
    'The ERP the job was written to (netsuite, sap); NULL before migration 0033 or when unknown.';
