#!/usr/bin/env bash
# Refuse to start without a valid environment (PSA_ERP_SYNC_ENV names config/environments/<name>.yaml),
# then hand over to the official Airflow image's entrypoint.
set -euo pipefail
psa-erp-sync env check
exec /entrypoint "$@"
