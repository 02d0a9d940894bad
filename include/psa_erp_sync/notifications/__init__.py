"""Airflow notifiers (``airflow.sdk.BaseNotifier``) of psa-erp-sync."""
