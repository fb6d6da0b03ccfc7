"""ray.util.metrics: Counter, Gauge, Histogram with tags, from the driver, tasks and actors.

The API and its errors are checked on both engines. Where the values are served
differs: Ray exports them from each node's metrics agent (its own port, a separate
process, scraped on its own schedule), raylite from the dashboard's HTTP server at
/metrics, so the endpoint checks are raylite_only.
"""

from __future__ import annotations

import http.client
import os
import pickle
import re
import warnings

import pytest

from tests._engine import AGAINST_RAY, ray, raylite_only, wait_for

if AGAINST_RAY:
    from ray.util.metrics import Counter, Gauge, Histogram
else:
    from raylite.util.metrics import Counter, Gauge, Histogram

RAY_INIT = {"num_cpus": 2}
# raylite's /metrics is on the dashboard's server: a node with the dashboard on a free port.
WITH_DASHBOARD = pytest.mark.ray_init(num_cpus=2, include_dashboard=True, dashboard_port=0)


@ray.remote
def count_in_task(n, shape):
    c = Counter("compat_metric_requests", description="requests", tag_keys=("route",))
    c.set_default_tags({"route": "task"})
    for _ in range(n):
        c.inc()
    c.inc(2.5, tags={"route": shape})
    h = Histogram("compat_metric_latency", boundaries=[0.1, 1.0], tag_keys=("route",))
    h.observe(0.05, tags={"route": shape})
    h.observe(5, tags={"route": shape})
    return n


@ray.remote
def record_missing_tag():
    c = Counter("compat_metric_missing", tag_keys=("a", "b"))
    c.inc(tags={"a": "x"})


@ray.remote
class Recorder:
    def __init__(self):
        self.gauge = Gauge("compat_metric_queue", tag_keys=("who",))

    def set(self, value):
        self.gauge.set(value, tags={"who": "actor"})
        return value


def test_constructor_errors_are_rays(ray_start):
    with pytest.raises(ValueError, match="Empty name is not allowed"):
        Counter("")
    with pytest.raises(TypeError, match="tag_keys should be a tuple type"):
        Counter("compat_metric_x", tag_keys=["a"])
    with pytest.raises(TypeError, match="Tag keys must be str"):
        Gauge("compat_metric_x", tag_keys=(1,))
    with pytest.raises(ValueError, match="boundaries argument should be provided"):
        Histogram("compat_metric_h")
    with pytest.raises(ValueError, match="Use positive values"):
        Histogram("compat_metric_h", boundaries=[1.0, 0])
    with pytest.warns(UserWarning, match="Invalid metric name: 1bad"):
        bad = Counter("1bad")
    bad.inc()  # discarded, not an error
    with pytest.warns(FutureWarning, match="contains a : character"):
        Counter("compat:colon")


def test_record_errors_are_rays(ray_start):
    c = Counter("compat_metric_errors", tag_keys=("a",))
    with pytest.raises(ValueError, match=r"Unrecognized tag key b\."):
        c.set_default_tags({"b": "x"})
    with pytest.raises(TypeError, match="Tag values must be str"):
        c.set_default_tags({"a": 1})
    with pytest.raises(ValueError, match=r"Missing value for tag key\(s\): a\."):
        c.inc()
    with pytest.raises(TypeError, match="Tag values must be str"):
        c.inc(tags={"a": 3})
    with pytest.raises(ValueError, match="value must be >0, got 0"):
        c.inc(0, tags={"a": "x"})
    with pytest.raises(TypeError, match="value must be int or float"):
        c.inc("1", tags={"a": "x"})
    g = Gauge("compat_metric_gauge_errors")
    g.set(None)  # a no-op
    with pytest.raises(TypeError, match="value must be int or float"):
        g.set("3")
    h = Histogram("compat_metric_hist_errors", boundaries=[1.0])
    with pytest.raises(TypeError, match="value must be int or float"):
        h.observe(None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c.inc(tags={"a": "x"})
        g.set(-4.5)
        h.observe(0)


def test_default_tags_info_and_pickling(ray_start):
    c = Counter("compat_metric_info", description="d", tag_keys=("a",))
    assert c.set_default_tags({"a": "b"}) is c
    assert c.info == {
        "name": "compat_metric_info",
        "description": "d",
        "tag_keys": ("a",),
        "default_tags": {"a": "b"},
    }
    h = Histogram("compat_metric_hinfo", boundaries=[1.0, 2.0])
    assert h.info["boundaries"] == [1.0, 2.0]
    # A metric pickles as its declaration: default tags stay behind.
    copy = pickle.loads(pickle.dumps(c))
    assert copy.info["default_tags"] == {}
    assert copy.info["tag_keys"] == ("a",)
    assert pickle.loads(pickle.dumps(h)).info["boundaries"] == [1.0, 2.0]


def test_metrics_record_in_tasks_and_actors(ray_start):
    assert ray.get([count_in_task.remote(3, "a"), count_in_task.remote(2, "b")]) == [3, 2]
    r = Recorder.remote()
    assert ray.get(r.set.remote(7)) == 7
    with pytest.raises(ValueError, match="Missing value for tag key"):
        ray.get(record_missing_tag.remote())


# --- raylite: the values at the dashboard's /metrics ---------------------------------------
def _scrape():
    ctx = ray.init(ignore_reinit_error=True)
    with open(os.path.join(ctx["session_dir"], "token")) as f:
        token = f.read().strip()
    host, port = ctx.dashboard_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/metrics", headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Content-Type").startswith("text/plain; version=0.0.4")
        return resp.read().decode()
    finally:
        conn.close()


def _sample(text, line_start):
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@WITH_DASHBOARD
@raylite_only  # Ray serves these from its metrics agent's port, not the dashboard's
def test_values_of_every_process_add_up_at_metrics(ray_start):
    driver = Counter("compat_metric_requests", description="requests", tag_keys=("route",))
    driver.inc(10, tags={"route": "a"})
    assert ray.get([count_in_task.remote(3, "a"), count_in_task.remote(2, "b")]) == [3, 2]
    r = Recorder.remote()
    ray.get(r.set.remote(7))
    ray.get(r.set.remote(4.5))

    def scraped():
        text = _scrape()
        want = {
            'ray_compat_metric_requests_total{route="task"}': 5.0,
            'ray_compat_metric_requests_total{route="a"}': 12.5,
            'ray_compat_metric_requests_total{route="b"}': 2.5,
            'ray_compat_metric_queue{who="actor"}': 4.5,
            'ray_compat_metric_latency_count{route="a"}': 2.0,
        }
        return text if all(_sample(text, k) == v for k, v in want.items()) else None

    text = wait_for(scraped, timeout=30, message=lambda: _scrape())
    assert "# HELP ray_compat_metric_requests requests" in text
    assert "# TYPE ray_compat_metric_requests counter" in text
    assert "# TYPE ray_compat_metric_queue gauge" in text
    assert "# TYPE ray_compat_metric_latency histogram" in text
    # Cumulative buckets: 0.05 falls in le=0.1, 5 only in +Inf.
    assert _sample(text, 'ray_compat_metric_latency_bucket{route="b",le="0.1"}') == 1.0
    assert _sample(text, 'ray_compat_metric_latency_bucket{route="b",le="1.0"}') == 1.0
    assert _sample(text, 'ray_compat_metric_latency_bucket{route="b",le="+Inf"}') == 2.0
    assert _sample(text, 'ray_compat_metric_latency_sum{route="b"}') == 5.05
    assert re.search(r"^ray_compat_metric_latency_count\{route=\"b\"\} 2$", text, re.M)


@WITH_DASHBOARD
@raylite_only  # the dashboard's token guards /metrics as it guards /api
def test_metrics_without_the_token_is_refused(ray_start):
    ctx = ray.init(ignore_reinit_error=True)
    host, port = ctx.dashboard_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 401
    finally:
        conn.close()


@raylite_only  # Ray 2.60 accepts the second declaration silently (checked by running it)
def test_a_name_redeclared_as_another_kind_warns_and_records_nothing(ray_start):
    Counter("compat_metric_redeclared").inc()
    with pytest.warns(UserWarning, match="declared before in this process as another kind"):
        gauge = Gauge("compat_metric_redeclared")
    gauge.set(3)  # discarded, not an error
    Histogram("compat_metric_rehist", boundaries=[1.0])
    with pytest.warns(UserWarning, match="or with other boundaries"):
        Histogram("compat_metric_rehist", boundaries=[2.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Histogram("compat_metric_rehist", boundaries=[1.0]).observe(0.5)  # same shape: fine
