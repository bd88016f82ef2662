"""The order the OPC UA source hands a publish response's values on in (``_in_time_order``)."""

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sources.base import Quality, TagValue
from gateway.sources.opcua.source import _in_time_order

T0 = datetime(2026, 1, 1, tzinfo=UTC)
values = st.lists(st.builds(lambda m, r, ms, v: TagValue(m, r, v, T0 + timedelta(milliseconds=ms), Quality.GOOD, T0),
                            st.sampled_from("ABC"), st.sampled_from(["good", "scrap"]), st.integers(0, 5),
                            st.integers()), max_size=30)


def tag(tv: TagValue) -> tuple[str, str]:
    return (tv.machine, tv.role)


@settings(max_examples=300, deadline=None)
@given(values)
def test_a_tags_own_values_keep_the_servers_order_even_when_its_clock_steps_back(batch):
    out = _in_time_order(batch)
    assert sorted(map(id, out)) == sorted(map(id, batch))
    for key in {tag(tv) for tv in batch}:
        assert [id(tv) for tv in out if tag(tv) == key] == [id(tv) for tv in batch if tag(tv) == key]


@settings(max_examples=300, deadline=None)
@given(values)
def test_tags_in_time_order_are_interleaved_by_time_and_ties_go_to_the_tag_seen_first(batch):
    last: dict[tuple[str, str], datetime] = {}
    ordered = []  # each tag's times made non-decreasing: the usual case
    for tv in batch:
        at = max(tv.source_time, last.get(tag(tv), tv.source_time))
        last[tag(tv)] = at
        ordered.append(TagValue(tv.machine, tv.role, tv.value, at, tv.quality, tv.received_at))
    seen = list(dict.fromkeys(map(tag, ordered)))
    expected = sorted(ordered, key=lambda tv: (tv.source_time, seen.index(tag(tv))))  # stable: server order within
    assert [id(tv) for tv in _in_time_order(ordered)] == [id(tv) for tv in expected]
