# Production image: Airflow 3.3.2 (Python 3.11, the lock's Python) + the runtime lock with
# --require-hashes + this package installed from its wheel (non-editable). No development tooling
# (simulators/, devtools/, tests/) is in the final stage; tests/test_deploy.py checks this file.
#
#   docker build -t psa-erp-sync:3.3.2 .                      the production image (last stage)
#   docker build --target simulators -t psa-erp-sync-simulators .   docker-compose's simulators only

FROM apache/airflow:3.3.2-python3.11 AS base
COPY --chown=airflow:root requirements.txt /opt/psa-erp-sync/requirements.txt
RUN pip install --no-cache-dir --require-hashes -r /opt/psa-erp-sync/requirements.txt

FROM base AS wheel
COPY --chown=airflow:root pyproject.toml /tmp/src/pyproject.toml
COPY --chown=airflow:root include /tmp/src/include
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels /tmp/src

# Development only: the simulators for docker-compose.yaml, never deployed.
FROM base AS simulators
COPY --chown=airflow:root simulators /opt/psa-erp-sync/simulators
WORKDIR /opt/psa-erp-sync

FROM base AS runtime
COPY --from=wheel /tmp/wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl
COPY --chown=airflow:root config /opt/psa-erp-sync/config
COPY --chown=airflow:root dags /opt/airflow/dags
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root --chmod=755 docker-entrypoint.sh /opt/psa-erp-sync/docker-entrypoint.sh
ENV PSA_ERP_SYNC_CONFIG_DIR=/opt/psa-erp-sync/config
# PSA_ERP_SYNC_ENV (dev, staging, prod) is set by the deployment; the entrypoint refuses to start
# without a valid one, before Airflow does anything.
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/psa-erp-sync/docker-entrypoint.sh"]
CMD []
