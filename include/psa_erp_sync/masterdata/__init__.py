"""Governed master data: ERP -> ODS sync, propagation to the PSA, ERP validation, project setup,
change orders and revenue leakage. Domain logic only: no Airflow imports."""
