# Image for docker-compose.yaml: Airflow 3.3.2 with this package and its pinned dependencies.
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt pyproject.toml /opt/psa-erp-sync/
COPY --chown=airflow:root include /opt/psa-erp-sync/include
COPY --chown=airflow:root simulators /opt/psa-erp-sync/simulators
COPY --chown=airflow:root config /opt/psa-erp-sync/config
RUN pip install --no-cache-dir -r /opt/psa-erp-sync/requirements.txt \
 && pip install --no-cache-dir --no-deps -e /opt/psa-erp-sync
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
ENV PSA_ERP_SYNC_CONFIG_DIR=/opt/psa-erp-sync/config
