"""The stack starts the SAP simulator only when asked, and then hands Airflow its connection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from devtools.airflow_env import airflow_env
from devtools.stack import SIM_PORTS, SIMULATORS, Stack
from simulators import PORTS, SCHEMAS


def test_every_simulator_has_one_port_and_schema() -> None:
    assert SIM_PORTS == PORTS
    assert set(SCHEMAS) == set(PORTS)
    assert len(set(PORTS.values())) == len(PORTS)


def test_sap_is_started_only_when_asked(tmp_path: Path) -> None:
    assert "sap" not in Stack().simulators  # the demo's flow is unchanged
    with pytest.raises(ValueError, match="unknown simulators"):
        Stack(simulators=("psa", "sapp"))
    plain, with_sap = Stack(), Stack(simulators=(*SIMULATORS, "sap"), port_offset=100)
    for stack in (plain, with_sap):
        stack.dsn = "postgresql://u:p@127.0.0.1:5432/db"
    assert "AIRFLOW_CONN_SAP_DEFAULT" not in airflow_env(plain, home=tmp_path / "a")
    conn = json.loads(airflow_env(with_sap, home=tmp_path / "b")["AIRFLOW_CONN_SAP_DEFAULT"])
    assert conn["host"] == "http://127.0.0.1:18205" and conn["login"]
