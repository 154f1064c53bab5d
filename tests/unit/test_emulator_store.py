"""The emulator's indexed store: range planning, keyset walks, and agreement with brute force."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sncli.emulator.query import compile_query, parse, sort_records
from sncli.emulator.state import EmulatorState
from sncli.emulator.store import Table, group_range, index_ordered, merge_ranges, take_positions

SECONDS = [f"2026-01-01 00:00:0{i}" for i in range(6)]
HEX = "0123456789abcdef"
sys_ids = st.text(alphabet=HEX, min_size=32, max_size=32)


def build(rows: list[tuple[str, str, str, str]]) -> tuple[EmulatorState, str]:
    state = EmulatorState()
    state.define_table("t", {"active": "boolean", "priority": "integer"})
    state.bulk_insert(
        "t",
        [
            {"sys_id": sid, "sys_updated_on": ts, "sys_created_on": ts, "active": active, "priority": prio}
            for sid, ts, active, prio in rows
        ],
    )
    return state, "t"


def table_of(state: EmulatorState, name: str) -> Table:
    return state._tables[name]


def keyset_query(base: str, ts: str, sys_id: str, hi: str) -> str:
    b = f"{base}^" if base else ""
    return (
        f"{b}sys_updated_on={ts}^sys_id>{sys_id}^NQ{b}sys_updated_on>{ts}^sys_updated_on<={hi}"
        "^ORDERBYsys_updated_on^ORDERBYsys_id"
    )


rows_strategy = st.lists(
    st.tuples(sys_ids, st.sampled_from(SECONDS[:4]), st.sampled_from(["true", "false"]), st.sampled_from("12345")),
    max_size=80,
    unique_by=lambda r: r[0],
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_strategy,
    page=st.integers(min_value=1, max_value=9),
    short=st.integers(min_value=0, max_value=3),
    hi=st.sampled_from(SECONDS[1:]),
    base=st.sampled_from(["", "active=true", "priority>2", "nosuchfield=1"]),
)
def test_keyset_walk_returns_every_record_once_in_order(
    rows: list[tuple[str, str, str, str]], page: int, short: int, hi: str, base: str
) -> None:
    state, name = build(rows)
    table = table_of(state, name)
    cursor = ("1970-01-01 00:00:00", "")
    seen: list[tuple[str, str]] = []
    for _ in range(len(rows) + 2):
        # A "short page" (ACLs hiding rows) returns fewer records; the walk must go on until an empty page.
        served = max(1, page - short)
        got, _ = table.select(keyset_query(base, *cursor, hi), limit=served, offset=0, want_count=False)
        if not got:
            break
        seen.extend(r.key for r in got)
        cursor = got[-1].key
    compiled = compile_query(parse(base), table.columns)
    expected = sorted(
        (ts, sid)
        for sid, ts, active, prio in rows
        if ts <= hi and compiled.matches({"active": active, "priority": prio})
    )
    assert seen == expected


# A small random query language over the test table, to compare the planner against brute force.
conditions = st.one_of(
    st.builds(
        lambda op, ts: f"sys_updated_on{op}{ts}", st.sampled_from(["=", ">", ">=", "<", "<="]), st.sampled_from(SECONDS)
    ),
    st.builds(
        lambda op, sid: f"sys_id{op}{sid}",
        st.sampled_from(["=", ">", ">=", "<", "<="]),
        st.text(alphabet=HEX, min_size=1, max_size=3),
    ),
    st.builds(lambda v: f"active={v}", st.sampled_from(["true", "false"])),
    st.builds(lambda op, v: f"priority{op}{v}", st.sampled_from(["=", ">", "<", "!="]), st.sampled_from("12345")),
    st.just("nosuchfield=1"),
)
terms = st.lists(conditions, min_size=1, max_size=2).map(lambda alts: "^OR".join(alts))
groups = st.lists(terms, min_size=1, max_size=4).map(lambda ts: "^".join(ts))
orders = st.sampled_from(
    [
        "",
        "^ORDERBYsys_updated_on",
        "^ORDERBYsys_updated_on^ORDERBYsys_id",
        "^ORDERBYsys_id",
        "^ORDERBYDESCsys_updated_on",
        "^ORDERBYDESCsys_updated_on^ORDERBYDESCsys_id",
        "^ORDERBYpriority^ORDERBYsys_id",
        "^ORDERBYDESCpriority",
    ]
)
queries = st.builds(lambda gs, order: "^NQ".join(gs) + order, st.lists(groups, min_size=0, max_size=3), orders)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=rows_strategy,
    query=queries,
    limit=st.integers(min_value=0, max_value=12),
    offset=st.integers(min_value=0, max_value=20),
    want_count=st.booleans(),
)
def test_select_agrees_with_brute_force(
    rows: list[tuple[str, str, str, str]], query: str, limit: int, offset: int, want_count: bool
) -> None:
    state, name = build(rows)
    table = table_of(state, name)
    compiled = compile_query(parse(query), table.columns)
    everything = list(table.ordered())
    matched = [r for r in everything if compiled.matches(r.fields)]
    if not index_ordered(compiled.order):
        matched.sort(key=lambda r: r.fields["sys_id"])  # no ORDERBY (and ties): sys_id order
        matched = sort_records(matched, compiled.order, table.columns, lambda r: r.fields)
    page, total = table.select(query, limit=limit, offset=offset, want_count=want_count)
    assert [r.key for r in page] == [r.key for r in matched[offset : offset + limit]]
    if want_count:
        assert total == len(matched)
    if total is not None:
        assert total == len(matched)


def test_keyset_groups_are_pure_ranges_and_base_query_is_not() -> None:
    state, name = build([(f"{i:032x}", SECONDS[i % 3], "true", "1") for i in range(30)])
    table = table_of(state, name)
    pure = compile_query(parse(keyset_query("", SECONDS[1], f"{4:032x}", SECONDS[2])), table.columns)
    first, second = (group_range(table.index, g) for g in pure.groups)
    assert first[2] and second[2]
    assert first[1] - first[0] == sum(1 for i in range(30) if i % 3 == 1 and i > 4)
    assert second[1] - second[0] == 10  # every record of the later second
    with_base = compile_query(parse(keyset_query("active=true", SECONDS[1], "", SECONDS[2])), table.columns)
    assert not any(group_range(table.index, g)[2] for g in with_base.groups)


def test_pure_keyset_page_and_count_come_from_the_ranges() -> None:
    rows = [(f"{i:032x}", SECONDS[0], "true", "1") for i in range(50)]
    state, name = build(rows)
    table = table_of(state, name)
    page, total = table.select(
        keyset_query("", SECONDS[0], f"{9:032x}", SECONDS[5]), limit=5, offset=0, want_count=True
    )
    assert [r.key[1] for r in page] == [f"{i:032x}" for i in range(10, 15)]
    assert total == 40


def test_result_cache_is_invalidated_by_writes() -> None:
    state, name = build([(f"{i:032x}", SECONDS[0], "true", str(i % 5 + 1)) for i in range(20)])
    table = table_of(state, name)
    first, total = table.select("ORDERBYDESCpriority", limit=3, offset=2, want_count=True)
    assert total == 20
    state.update(name, first[0].key[1], {"priority": "9"})
    again, total = table.select("ORDERBYDESCpriority", limit=1, offset=0, want_count=True)
    assert again[0].fields["priority"] == "9"
    state.delete(name, again[0].key[1])
    assert table.select("ORDERBYDESCpriority", limit=0, offset=0, want_count=True)[1] == 19


def test_merge_and_take_positions() -> None:
    assert merge_ranges([(5, 8), (0, 3), (2, 4), (8, 9), (10, 10)]) == [(0, 4), (5, 9)]
    merged = [(0, 4), (5, 9)]
    assert list(take_positions(merged, 0, 3)) == [0, 1, 2]
    assert list(take_positions(merged, 3, 3)) == [3, 5, 6]
    assert list(take_positions(merged, 7, 10)) == [8]
    assert list(take_positions(merged, 9, 10)) == []
    assert list(take_positions(merged, 0, 0)) == []


def test_index_ordered() -> None:
    assert not index_ordered(parse("").order)  # no ORDERBY: sys_id order, not the timestamp index's
    assert index_ordered(parse("ORDERBYsys_updated_on").order)
    assert index_ordered(parse("ORDERBYsys_updated_on^ORDERBYsys_id^ORDERBYnumber").order)
    assert not index_ordered(parse("ORDERBYsys_id").order)
    assert not index_ordered(parse("ORDERBYsys_updated_on^ORDERBYnumber").order)
    assert not index_ordered(parse("ORDERBYDESCsys_updated_on").order)


ops = st.lists(
    st.tuples(st.sampled_from(["insert", "bulk", "update", "delete"]), st.sampled_from(SECONDS), st.integers(0, 50)),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(ops=ops)
def test_index_and_rows_stay_aligned_through_writes(ops: list[tuple[str, str, int]]) -> None:
    state = EmulatorState()
    for op, ts, n in ops:
        existing = [r["sys_id"] for r in state.records("t")]
        if op == "insert":
            state.insert("t", {"n": str(n)}, at=ts)
        elif op == "bulk":
            state.bulk_insert("t", [{"n": str(i)} for i in range(n % 5 + 1)], at=ts)
        elif op == "update" and existing:
            state.update("t", existing[n % len(existing)], {"n": f"u{n}{ts}"}, at=ts)
        elif op == "delete" and existing:
            state.delete("t", existing[n % len(existing)])
    if not state.has_table("t"):
        return
    table = table_of(state, "t")
    assert [r.key for r in table.rows] == table.index == sorted(r.key for r in table.records.values())
    assert all(table.records[r.key[1]] is r for r in table.rows)
