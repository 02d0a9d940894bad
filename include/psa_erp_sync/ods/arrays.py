"""Text arrays sent as parameters without psycopg's per-element dump.

A chunk's statements send arrays of 5,000 keys (source ids, fingerprints, ``ctid``s). psycopg's
binary list dumper is Python code that dumps each element in turn: ~0.2 us a source id, ~0.35 us
a fingerprint, in the thread that holds the GIL while the judging thread waits for it. Such
arrays are plain ASCII words that an array literal holds unquoted, so the literal is one
``join`` in C and PostgreSQL's ``array_in`` parses it (the statements cast the parameter to
``text[]``: ``%b::text[]`` takes a ``str`` or a ``list`` alike).
"""

from __future__ import annotations

from collections.abc import Sequence


def text_array(values: Sequence[str]) -> str | list[str]:
    """A parameter for ``%b::text[]`` holding ``values`` in order: the array literal when every
    value is a non-empty ASCII word of letters and digits (unquoted, each is exactly its text; a
    word spelling ``null`` in any case would be SQL's NULL, so any value holding it is sent as a
    list), otherwise the list itself (psycopg dumps it element by element)."""
    joined = ",".join(values)
    if (
        joined.isascii()
        and joined.replace(",", "").isalnum()
        and joined.count(",") == len(values) - 1
        and "" not in values
        and "null" not in joined.lower()
    ):
        return "{" + joined + "}"
    return list(values)


def tid_array(ctids: Sequence[str]) -> str:
    """A parameter for ``%b::text[]::tid[]`` of ``ctid``s as PostgreSQL writes them (``ctid::text``:
    ``(block,offset)``, digits, a comma and parentheses): each quoted, none needs an escape."""
    return '{"' + '","'.join(ctids) + '"}' if ctids else "{}"
