"""What the user sees: worker output relayed to the driver, and the task timeline."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

from tests._engine import StdStreams, ray, wait_for

RAY_INIT = {"num_cpus": 2}


@ray.remote
def print_to_stdout(text):
    print(text, flush=True)
    return os.getpid()


@ray.remote
def print_to_stderr(text):
    print(text, file=sys.stderr, flush=True)
    return os.getpid()


@ray.remote
def print_lines(lines):
    print("\n".join(lines), flush=True)
    return os.getpid()


@ray.remote
class Talker:
    def say(self, text):
        print(text, flush=True)
        return os.getpid()


@ray.remote
def timeline_marker_task(seconds):
    time.sleep(seconds)
    return os.getpid()


class _Captured:
    """What the driver prints (StdStreams: no line lost to a capture's truncation)."""

    def __init__(self, monkeypatch):
        self.streams = StdStreams(monkeypatch)

    @property
    def out(self):
        return self.streams.out

    @property
    def err(self):
        return self.streams.err

    def wait_for_line(self, line, stream="out", timeout=10.0):
        wait_for(
            lambda: line in self.streams.text(stream).splitlines(),
            timeout=timeout,
            message=lambda: (
                f"line {line!r} on driver std{stream}; got {self.streams.text(stream)!r}"
            ),
        )


def _unique(label):
    return f"{label}-{uuid.uuid4().hex[:12]}"


def test_task_print_reaches_driver_stdout_with_prefix(ray_start, monkeypatch):
    captured = _Captured(monkeypatch)
    text = _unique("hello from a task")
    pid = ray.get(print_to_stdout.remote(text))
    assert pid != os.getpid()
    captured.wait_for_line(f"(print_to_stdout pid={pid}) {text}")


def test_task_stderr_reaches_driver_stderr_with_prefix(ray_start, monkeypatch):
    captured = _Captured(monkeypatch)
    text = _unique("error text")
    pid = ray.get(print_to_stderr.remote(text))
    captured.wait_for_line(f"(print_to_stderr pid={pid}) {text}", stream="err")
    assert text not in captured.out


def test_every_line_is_prefixed(ray_start, monkeypatch):
    captured = _Captured(monkeypatch)
    lines = [_unique(f"line{i}") for i in range(3)]
    pid = ray.get(print_lines.remote(lines))
    for line in lines:
        captured.wait_for_line(f"(print_lines pid={pid}) {line}")
    positions = [captured.out.index(line) for line in lines]
    assert positions == sorted(positions), "lines of one worker arrive in order"


def test_actor_print_is_prefixed_with_class_name(ray_start, monkeypatch):
    captured = _Captured(monkeypatch)
    talker = Talker.remote()
    text = _unique("actor says")
    pid = ray.get(talker.say.remote(text))
    assert pid != os.getpid()
    captured.wait_for_line(f"(Talker pid={pid}) {text}")


@ray.remote
class Labelled:
    def __init__(self, n):
        self.n = n

    def __repr__(self):
        return f"Labelled(n={self.n})"

    def say(self, text):
        print(text, flush=True)
        return os.getpid()


def test_actor_print_is_prefixed_with_its_repr_when_it_has_one(ray_start, monkeypatch):
    captured = _Captured(monkeypatch)
    actor = Labelled.remote(7)
    text = _unique("labelled says")
    pid = ray.get(actor.say.remote(text))
    captured.wait_for_line(f"(Labelled(n=7) pid={pid}) {text}")


def _task_events(events, name):
    return [e for e in events if e.get("ph") == "X" and name in str(e.get("name", ""))]


def _wait_for_timeline_events(name, count, filename=None):
    def enough():
        events = ray.timeline(filename=filename) if filename else ray.timeline()
        if filename:
            with open(filename) as f:
                events = json.load(f)
        found = _task_events(events, name)
        return found if len(found) >= count else None

    return wait_for(enough, timeout=15, interval=0.25, message=f"{count} {name} events")


def test_timeline_lists_finished_tasks(ray_start):
    ray.get([timeline_marker_task.remote(0.2) for _ in range(3)])
    events = _wait_for_timeline_events("timeline_marker_task", 3)
    assert isinstance(ray.timeline(), list)
    for event in events:
        assert {"name", "pid", "tid", "ts", "dur", "ph"} <= set(event), event
        assert isinstance(event["ts"], int | float)
        assert isinstance(event["dur"], int | float)
        # Chrome trace times are microseconds: each task slept 0.2 s.
        assert event["dur"] >= 0.2e6, event
        assert event["ts"] > 1e15, "ts is a Unix time in microseconds"


def test_timeline_written_to_file_is_json(ray_start, tmp_path):
    ray.get([timeline_marker_task.remote(0.05) for _ in range(2)])
    filename = str(tmp_path / "timeline.json")
    events = _wait_for_timeline_events("timeline_marker_task", 2, filename=filename)
    with open(filename) as f:
        loaded = json.load(f)
    assert isinstance(loaded, list)
    assert all(isinstance(e, dict) for e in loaded)
    assert all("ts" in e for e in loaded), [e for e in loaded if "ts" not in e]
    assert events
