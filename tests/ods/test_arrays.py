"""Text arrays as parameters (include/psa_erp_sync/ods/arrays.py): whatever the values, PostgreSQL
reads back exactly them, in order; plain words travel as one array literal (no per-element dump)."""

from __future__ import annotations

import hashlib

import psycopg
import pytest

from psa_erp_sync.ods import arrays

CASES: list[list[str]] = [
    [],
    ["1"],
    [str(n) for n in range(300000001, 300005001)],
    [hashlib.sha256(str(n).encode()).hexdigest() for n in range(50)],
    ["1", "NULL"],
    ["null", "2"],
    ["Null"],
    ["nullx", "3"],
    ["a,b"],
    ["a", ""],
    [""],
    ['"q"', "{c}", "back\\slash", " lead", "x y", "é", "\u0661", "1.0", "-5", "a\tb"],
    ["007", "7", "0"],
]


@pytest.mark.parametrize("values", CASES, ids=lambda v: repr(v[:3]))
def test_postgresql_reads_back_exactly_the_values(clean_ods: str, values: list[str]) -> None:
    with psycopg.connect(clean_ods) as conn:
        back = conn.execute("SELECT %b::text[]", (arrays.text_array(values),)).fetchone()
        assert back is not None and back[0] == values
        unnested = [
            r[0] for r in conn.execute("SELECT x FROM unnest(%b::text[]) x", (arrays.text_array(values),))
        ]
        assert unnested == values


def test_words_go_as_one_literal_and_anything_else_as_the_list() -> None:
    assert arrays.text_array(["12", "ab3"]) == "{12,ab3}"
    for values in (["1", "NULL"], ["a,b"], ["a", ""], ["é"], ["1.0"], []):
        assert arrays.text_array(values) == values


def test_ctids_read_back_as_the_rows_they_name(clean_ods: str) -> None:
    with psycopg.connect(clean_ods) as conn:
        conn.execute("CREATE TEMP TABLE t AS SELECT g FROM generate_series(1, 700) g")
        ctids = [r[0] for r in conn.execute("SELECT ctid::text FROM t ORDER BY g DESC")]
        got = conn.execute(
            "SELECT t.g FROM unnest(%b::text[]::tid[]) WITH ORDINALITY AS k(row_id, n)"
            " JOIN t ON t.ctid = k.row_id ORDER BY k.n",
            (arrays.tid_array(ctids),),
        ).fetchall()
        assert [g for (g,) in got] == list(range(700, 0, -1))
        assert conn.execute("SELECT cardinality(%b::text[]::tid[])", (arrays.tid_array([]),)).fetchone() == (
            0,
        )
