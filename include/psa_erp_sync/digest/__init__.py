"""Owner digests: what a run left in the exception queue, per owner, in a message a person reads.

Pure functions (no Airflow, no I/O): :func:`build` groups unannounced exception items by owner;
``render_*`` turn a :class:`Digest` into an e-mail or a chat message. The Airflow notifier
(:mod:`psa_erp_sync.notifications.owner_digest`) locks the items, sends and marks them.

A digest holds counts, reason codes, legal entities and amounts only: never a name, a note, an
e-mail address of a person, or a record's free text.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from psa_erp_sync.money import format_minor
from psa_erp_sync.ods.exceptions import Unnotified


@dataclass(frozen=True)
class Digest:
    owner: str
    dag_id: str
    run_id: str
    item_ids: tuple[int, ...]
    by_reason: tuple[tuple[str, str, int], ...]  # (kind, reason code, count), largest first
    by_legal_entity: tuple[tuple[str, int], ...]
    amounts: tuple[tuple[str, int], ...]  # (currency, minor units), per currency
    without_amount: int
    console_link: str
    fixes: dict[str, str] = field(default_factory=dict)

    @property
    def items(self) -> int:
        return len(self.item_ids)

    def summary(self) -> dict[str, Any]:
        """What is kept in ``exceptions.notification.summary`` (JSON, no personal data)."""
        return {
            "by_reason": [{"kind": k, "reason_code": r, "count": n} for k, r, n in self.by_reason],
            "by_legal_entity": dict(self.by_legal_entity),
            "amounts_minor": dict(self.amounts),
            "without_amount": self.without_amount,
        }

    def subject(self) -> str:
        return (
            f"[psa-erp-sync] {self.items} new exception item{'s' if self.items != 1 else ''} for {self.owner}"
        )


def build(
    items: Iterable[Unnotified],
    *,
    dag_id: str,
    run_id: str,
    console_url: str,
    fixes: dict[str, str] | None = None,
) -> list[Digest]:
    """One digest per owner of ``items``, in owner order."""
    per_owner: dict[str, list[Unnotified]] = defaultdict(list)
    for item in items:
        per_owner[item.owner].append(item)
    digests = []
    for owner in sorted(per_owner):
        group = per_owner[owner]
        reasons = Counter((i.kind, i.reason_code) for i in group)
        entities = Counter(i.legal_entity or "(none)" for i in group)
        amounts: dict[str, int] = defaultdict(int)
        for i in group:
            if i.amount_minor is not None and i.currency:
                amounts[i.currency] += i.amount_minor
        link = f"{console_url}?{urlencode({'owner': owner, 'status': 'open'})}"
        digests.append(
            Digest(
                owner=owner,
                dag_id=dag_id,
                run_id=run_id,
                item_ids=tuple(i.id for i in group),
                by_reason=tuple(
                    (k, r, n) for (k, r), n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
                ),
                by_legal_entity=tuple(sorted(entities.items())),
                amounts=tuple(sorted(amounts.items())),
                without_amount=sum(1 for i in group if i.amount_minor is None or not i.currency),
                console_link=link,
                fixes={r: fixes[r] for _, r in reasons if fixes and r in fixes},
            )
        )
    return digests


def _amount_lines(digest: Digest) -> list[str]:
    lines = [f"{currency} {format_minor(minor, currency)}" for currency, minor in digest.amounts]
    if digest.without_amount:
        lines.append(f"{digest.without_amount} item(s) without a known amount")
    return lines or ["no amounts"]


def render_text(digest: Digest) -> str:
    """The digest as plain text (also the chat messages' body)."""
    lines = [
        f"{digest.items} new exception item(s) for {digest.owner}, left by {digest.dag_id} run {digest.run_id}.",
        "",
        "By reason:",
        *(f"  {n:>6}  {reason} ({kind})" for kind, reason, n in digest.by_reason),
        "By legal entity:",
        *(f"  {n:>6}  {entity}" for entity, n in digest.by_legal_entity),
        "Amounts at stake:",
        *(f"  {line}" for line in _amount_lines(digest)),
        "",
        f"Open the queue: {digest.console_link}",
    ]
    return "\n".join(lines)


def render_html(digest: Digest) -> str:
    """The digest as an HTML e-mail body (a table per grouping, escaped, no external resources)."""
    e = html.escape

    def table(caption: str, header: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> str:
        head = "".join(f"<th scope='col'>{e(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><caption>{e(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    reasons = table(
        "By reason",
        ("Reason", "Kind", "Items", "What to do"),
        ((r, k, str(n), digest.fixes.get(r, "")) for k, r, n in digest.by_reason),
    )
    entities = table(
        "By legal entity", ("Legal entity", "Items"), ((le, str(n)) for le, n in digest.by_legal_entity)
    )
    amounts = "".join(f"<li>{e(line)}</li>" for line in _amount_lines(digest))
    return (
        f"<html><body><h1>{e(digest.subject())}</h1>"
        f"<p>Left by <code>{e(digest.dag_id)}</code> run <code>{e(digest.run_id)}</code>.</p>"
        f"{reasons}{entities}<h2>Amounts at stake</h2><ul>{amounts}</ul>"
        f"<p><a href='{e(digest.console_link)}'>Open {e(digest.owner)}'s queue</a></p></body></html>"
    )


def render_slack(digest: Digest) -> dict[str, Any]:
    """A Slack incoming-webhook payload."""
    return {
        "text": digest.subject(),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": render_text(digest)}}],
    }


def render_teams(digest: Digest) -> dict[str, Any]:
    """A Microsoft Teams incoming-webhook payload (MessageCard)."""
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": digest.subject(),
        "title": digest.subject(),
        "text": render_text(digest).replace("\n", "  \n"),
        "potentialAction": [
            {
                "@type": "OpenUri",
                "name": "Open the queue",
                "targets": [{"os": "default", "uri": digest.console_link}],
            }
        ],
    }
