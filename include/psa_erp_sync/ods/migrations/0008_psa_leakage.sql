-- Revenue leakage seen from the PSA: a project's money budget raised above the ERP contract value
-- with no approved CRM change order to explain it. Counted apart from the CRM change orders
-- (leaked_count / amounts keep their meaning), so a run's leakage splits by source system.
ALTER TABLE master.leakage_run
    ADD COLUMN psa_leaked_count integer NOT NULL DEFAULT 0,
    ADD COLUMN psa_amounts      jsonb   NOT NULL DEFAULT '{}'::jsonb;
COMMENT ON TABLE master.leakage_run IS 'Revenue leakage found per run: approved CRM change orders absent from the ERP contract values, and PSA budgets above the ERP contract value no approved change order explains.';
COMMENT ON COLUMN master.leakage_run.leaked_count IS 'CRM side: approved change orders absent from the ERP (or unexplained gaps).';
COMMENT ON COLUMN master.leakage_run.amounts IS 'CRM side: leaked amount per currency as decimal strings, e.g. {"USD": "1234.00"}.';
COMMENT ON COLUMN master.leakage_run.psa_leaked_count IS 'PSA side: projects whose budget exceeds the ERP contract value beyond the approved CRM change orders.';
COMMENT ON COLUMN master.leakage_run.psa_amounts IS 'PSA side: the unexplained excess per currency as decimal strings, e.g. {"USD": "1234.00"}.';
