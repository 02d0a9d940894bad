"""``[core] hostname_callable`` of the e2e's Celery workers: the container host name they stand for.

In docker-compose every worker is its own container, so a task instance's ``hostname`` names the
worker that ran it. The e2e runs two workers on one machine; each gets ``E2E_CONTAINER_HOSTNAME``
so the task instances tell them apart the same way.
"""

from __future__ import annotations

import os
import socket


def container_hostname() -> str:
    return os.environ.get("E2E_CONTAINER_HOSTNAME") or socket.getfqdn()
