-- 0039: master data per ERP (issue 15, deliverable 6): master_data_sync reads every ERP in force,
-- SAP S/4HANA beside NetSuite (docs/multi-erp.md, "Downstream per ERP"). Forward-only: never edit;
-- add a new file.
--
-- master.erp_record was keyed (record_type, external_id): one ERP. SAP keys its customers and WBS
-- elements by our id *per company code*, and a migrated customer (psa-client-1) is held by both
-- ERPs during a transition. Each record is now keyed by the ERP that holds it and, for SAP, the
-- company code: (erp, record_type, company_code, external_id). Existing rows are NetSuite's
-- (erp 'netsuite', company_code '': NetSuite records are not per company code), so they stay as
-- they are. SAP's records use their own record types (sap_customer, sap_wbs_element,
-- sap_posting_period), so the readers that know only NetSuite's ('customer', 'job',
-- 'accountingperiod': billing, revenue, forecast, console) read exactly what they read before.

ALTER TABLE master.erp_record
    ADD COLUMN erp          text NOT NULL DEFAULT 'netsuite',
    ADD COLUMN company_code text NOT NULL DEFAULT '';
COMMENT ON COLUMN master.erp_record.erp IS 'The ERP holding the record (a name of config/erp_routing.yaml erps): netsuite or sap.';
COMMENT ON COLUMN master.erp_record.company_code IS 'SAP company code the record belongs to; empty for NetSuite (not per company code).';
ALTER TABLE master.erp_record DROP CONSTRAINT erp_record_pkey;
ALTER TABLE master.erp_record ADD PRIMARY KEY (erp, record_type, company_code, external_id);
-- The readers that know one ERP look records up by (record_type, external_id).
CREATE INDEX erp_record_type_id_idx ON master.erp_record (record_type, external_id);

ALTER TABLE master.propagation
    ADD COLUMN erp          text NOT NULL DEFAULT 'netsuite',
    ADD COLUMN company_code text NOT NULL DEFAULT '';
COMMENT ON COLUMN master.propagation.erp IS 'The ERP whose change this is (with company_code: the master.erp_record row it names).';
