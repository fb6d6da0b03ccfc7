"""metric_values: a process's series drained as records, a node's table merging them."""

from __future__ import annotations

from raylite.metric_values import COUNTER, GAUGE, HISTOGRAM, MetricsTable, ProcessMetrics


def _process(source: str) -> ProcessMetrics:
    p = ProcessMetrics()
    p.source = source
    p.declare(COUNTER, "reqs", "requests\nserved", ())
    p.declare(GAUGE, "depth", "", ())
    p.declare(HISTOGRAM, "lat", "", (0.5, 2))
    return p


def test_a_series_reports_once_per_change_and_asks_for_one_flush():
    asked = []
    p = _process("a")
    p.on_dirty = lambda: asked.append(1)
    p.record("reqs", {"r": "x"}, 1)
    p.record("reqs", {"r": "x"}, 2)
    assert asked == [1]  # only the first change after a report asks
    (record,) = p.drain()
    assert record == ["a", COUNTER, "reqs", "requests\nserved", [], [("r", "x")], 3.0]
    assert p.drain() is None
    p.record("reqs", {"r": "x"}, 1)
    assert asked == [1, 1]
    assert p.drain()[0][-1] == 4.0  # cumulative


def test_the_table_adds_processes_and_keeps_the_latest_gauge():
    a, b = _process("a"), _process("b")
    a.record("reqs", {"r": 'q"\\'}, 2)
    b.record("reqs", {"r": 'q"\\'}, 3)
    a.record("depth", {}, 5)
    b.record("depth", {}, 1)  # set later: the one shown
    for v in (0.1, 1, 7):
        a.record("lat", {}, v)
    b.record("lat", {}, 0.5)
    table = MetricsTable()
    old = a.drain()
    table.merge(old)
    table.merge(b.drain())
    a.record("reqs", {"r": 'q"\\'}, 1)
    table.merge(a.drain())
    table.merge(old)  # an overtaken report changes nothing
    text = table.prometheus_text()
    assert text.splitlines() == [
        "# TYPE ray_depth gauge",
        "ray_depth 1.0",
        "# TYPE ray_lat histogram",
        'ray_lat_bucket{le="0.5"} 2',
        'ray_lat_bucket{le="2.0"} 3',
        'ray_lat_bucket{le="+Inf"} 4',
        "ray_lat_sum 8.6",
        "ray_lat_count 4",
        "# HELP ray_reqs requests\\nserved",
        "# TYPE ray_reqs counter",
        'ray_reqs_total{r="q\\"\\\\"} 6.0',
    ]


def test_an_empty_table_serves_nothing():
    assert MetricsTable().prometheus_text() == ""


def test_a_name_keeps_its_first_kind_and_boundaries():
    p = _process("a")
    assert not p.declare(GAUGE, "reqs", "", ())
    assert not p.declare(HISTOGRAM, "lat", "", (1,))
    assert p.declare(HISTOGRAM, "lat", "again", (0.5, 2.0))
    table = MetricsTable()
    p.record("lat", {}, 1)
    table.merge(p.drain())
    other = ProcessMetrics()
    other.source = "b"
    other.declare(HISTOGRAM, "lat", "", (3,))
    other.record("lat", {}, 1)
    table.merge(other.drain())  # other boundaries: not mixed in
    assert "ray_lat_count 1" in table.prometheus_text().splitlines()
