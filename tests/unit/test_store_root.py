"""Where the object store lives: /dev/shm when it can hold it, else disk with a warning."""

from __future__ import annotations

import logging
import shutil
from collections import namedtuple

from raylite import node_start

Usage = namedtuple("Usage", "total used free")


def test_small_dev_shm_falls_back_to_disk_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(node_start, "default_store_root", lambda: "/dev/shm")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(64 << 20, 0, 64 << 20))
    logging.getLogger("raylite").propagate = True
    with caplog.at_level(logging.WARNING, logger="raylite"):
        root = node_start.store_root(2 << 30)
    assert root != "/dev/shm"
    assert "/dev/shm has only 64 MiB free" in caplog.text
    assert "--shm-size" in caplog.text


def test_roomy_dev_shm_is_used(monkeypatch, caplog):
    monkeypatch.setattr(node_start, "default_store_root", lambda: "/dev/shm")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(8 << 30, 0, 8 << 30))
    with caplog.at_level(logging.WARNING, logger="raylite"):
        assert node_start.store_root(2 << 30) == "/dev/shm"
    assert "/dev/shm" not in caplog.text
