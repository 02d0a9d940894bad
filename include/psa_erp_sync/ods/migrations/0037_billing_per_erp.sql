-- 0037: billing read back per ERP (issue 15: billing on SAP for the legal entities routed there).
-- Forward-only: never edit; add a new file.
--
-- billing.erp_invoice and billing.erp_payment hold what each ERP holds: NetSuite's rows (internal ids
-- are digits) and SAP's (internal id `sap:<company code>:<fiscal year>:<accounting document>`, so
-- the two never collide under the existing keys). `erp` says which ERP a row was read from; rows
-- read before this migration are NetSuite's.
ALTER TABLE billing.erp_invoice ADD COLUMN erp text NOT NULL DEFAULT 'netsuite';
ALTER TABLE billing.erp_payment ADD COLUMN erp text NOT NULL DEFAULT 'netsuite';
CREATE INDEX erp_invoice_erp_idx ON billing.erp_invoice (erp, legal_entity, tran_date);
COMMENT ON COLUMN billing.erp_invoice.erp IS 'The ERP the record was read from (netsuite | sap).';
COMMENT ON COLUMN billing.erp_payment.erp IS 'The ERP the record was read from (netsuite | sap).';
