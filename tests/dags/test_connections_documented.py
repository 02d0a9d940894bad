"""Every Airflow connection id the DAGs, operators, hooks and the plugin use is documented in
``config/connections.example.json`` (what a platform engineer must create), and nothing there is stale."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "include" / "psa_erp_sync"


def _string(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def connection_ids_in_code() -> set[str]:
    """Conn ids written in the deployable code: ``*conn_id`` defaults and keywords, hooks'
    ``default_conn_name``, and the webhook ingress's ``CONN_IDS``."""
    found: set[str] = set()
    files = list(PACKAGE.rglob("*.py"))  # devtools/ is outside: its connections are the demo's own
    files += list((ROOT / "dags").glob("*.py")) + list((ROOT / "plugins").glob("*.py"))
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.arguments):
                args = node.posonlyargs + node.args
                pairs = list(zip(args[len(args) - len(node.defaults) :], node.defaults, strict=True))
                pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d]
                found |= {v for a, d in pairs if a.arg.endswith("conn_id") and (v := _string(d))}
            elif isinstance(node, ast.keyword) and node.arg and node.arg.endswith("conn_id"):
                found |= {v} if (v := _string(node.value)) else set()
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = {t.id for t in targets if isinstance(t, ast.Name)}
                if "default_conn_name" in names:
                    found |= {v} if (v := _string(node.value)) else set()
                if "CONN_IDS" in names and isinstance(node.value, ast.Dict):
                    found |= {v for value in node.value.values if (v := _string(value))}
    return found


def connection_ids_in_config() -> set[str]:
    """Conn ids named in ``config/``: the owner digests' SMTP and chat-webhook connections."""
    from psa_erp_sync.config import load_notifications

    settings = load_notifications()
    recipients = [settings.recipients.default, *settings.recipients.owners.values()]
    return {settings.email.conn_id} | {c for r in recipients for c in r.slack + r.teams}


def connection_ids_of_tasks(parse_times: dict[str, tuple[float, list[str], dict[str, Any]]]) -> set[str]:
    found = set()
    for _, _, dags in parse_times.values():
        for dag in dags.values():
            for task in dag.tasks:
                for name, value in vars(task).items():
                    if name.endswith("conn_id") and isinstance(value, str):
                        found.add(value)
    return found


def documented() -> set[str]:
    examples = json.loads((ROOT / "config" / "connections.example.json").read_text())
    return {key for key in examples if not key.startswith("_")}


def test_the_scan_finds_the_known_connections() -> None:
    # Guards the scan itself: these are written in hooks and the ingress.
    assert {
        "psa_default",
        "erp_default",
        "ods_default",
        "psa_webhook",
        "erp_webhook",
    } <= connection_ids_in_code()


def test_every_connection_id_in_use_is_documented(
    parse_times: dict[str, tuple[float, list[str], dict[str, Any]]],
) -> None:
    used = connection_ids_in_code() | connection_ids_of_tasks(parse_times) | connection_ids_in_config()
    missing = used - documented()
    assert not missing, f"add to config/connections.example.json (no secrets): {sorted(missing)}"
    stale = documented() - used
    assert not stale, f"documented but used nowhere: {sorted(stale)}"
