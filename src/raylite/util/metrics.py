"""ray.util.metrics: Counter, Gauge and Histogram, as Ray 2.60 declares and checks them.

Owns the public classes, their argument checks and errors (Ray's messages), default
tags and pickling (a metric pickles as its name, description, tag keys and boundaries,
not its default tags, as Ray's __reduce__). Not the values (metric_values.PROCESS
keeps them, the periodic task-event flush reports them, the dashboard serves them at
/metrics in Prometheus text).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from .. import metric_values

_VALID_METRIC_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def _is_invalid_metric_name(name: str) -> bool:
    if len(name) == 0:
        raise ValueError("Empty name is not allowed. Please provide a metric name.")
    if not _VALID_METRIC_NAME_RE.match(name):
        warnings.warn(
            f"Invalid metric name: {name}. Metric will be discarded "
            "and data will not be collected or published. "
            "Metric names can only contain letters, numbers, _, and :. "
            "Metric names cannot start with numbers.",
            UserWarning,
            stacklevel=3,
        )
        return True
    return False


class Metric:
    """The parent class of custom metrics."""

    _kind = ""

    def __init__(
        self,
        name: str,
        description: str = "",
        tag_keys: tuple[str, ...] | None = None,
    ) -> None:
        self._discard_metric = _is_invalid_metric_name(name)
        self._name = name
        self._description = description
        self._default_tags: dict[str, str] = {}
        self._tag_keys = tag_keys or ()
        if not isinstance(self._tag_keys, tuple):
            raise TypeError(f"tag_keys should be a tuple type, got: {type(self._tag_keys)}")
        for key in self._tag_keys:
            if not isinstance(key, str):
                raise TypeError(f"Tag keys must be str, got {type(key)}.")
        if ":" in self._name:
            warnings.warn(
                f"Metric name {self._name} contains a : character, which is no longer "
                "allowed. Please migrate to the new metric name format. "
                "This will be an error in the future.",
                FutureWarning,
                stacklevel=3,
            )

    def _declare(self, boundaries: list[float] | tuple[float, ...] = ()) -> None:
        if self._discard_metric:
            return
        if not metric_values.PROCESS.declare(self._kind, self._name, self._description, boundaries):
            warnings.warn(
                f"Metric {self._name} was declared before in this process as another kind "
                "or with other boundaries: this one will be discarded and its data will "
                "not be collected or published. Give it another name.",
                UserWarning,
                stacklevel=3,
            )
            self._discard_metric = True

    def set_default_tags(self, default_tags: dict[str, str]) -> Metric:
        """Set default tags of metrics; returns the metric itself."""
        for key, val in default_tags.items():
            if key not in self._tag_keys:
                raise ValueError(f"Unrecognized tag key {key}.")
            if not isinstance(val, str):
                raise TypeError(f"Tag values must be str, got {type(val)}.")
        self._default_tags = default_tags
        return self

    def _record(self, value: float, tags: dict[str, str] | None = None) -> None:
        if self._discard_metric:
            return
        final_tags = self._get_final_tags(tags)
        missing = [key for key in self._tag_keys if key not in final_tags]
        if missing:
            raise ValueError(f"Missing value for tag key(s): {','.join(missing)}.")
        metric_values.PROCESS.record(self._name, final_tags, value)

    def _get_final_tags(self, tags: dict[str, str] | None) -> dict[str, str]:
        if not tags:
            return self._default_tags
        for val in tags.values():
            if not isinstance(val, str):
                raise TypeError(f"Tag values must be str, got {type(val)}.")
        return {**self._default_tags, **tags}

    @property
    def info(self) -> dict[str, Any]:
        """The metric's name, description, tag keys and default tags."""
        return {
            "name": self._name,
            "description": self._description,
            "tag_keys": self._tag_keys,
            "default_tags": self._default_tags,
        }


class Counter(Metric):
    """A cumulative metric that only increases (exported as ray_<name>_total)."""

    _kind = metric_values.COUNTER

    def __init__(
        self, name: str, description: str = "", tag_keys: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(name, description, tag_keys)
        self._declare()

    def __reduce__(self) -> Any:
        return self.__class__, (self._name, self._description, self._tag_keys)

    def inc(self, value: float = 1.0, tags: dict[str, str] | None = None) -> None:
        """Increment the counter by `value` (defaults to 1)."""
        if not isinstance(value, (int, float)):
            raise TypeError(f"value must be int or float, got {type(value)}.")
        if value <= 0:
            raise ValueError(f"value must be >0, got {value}")
        self._record(value, tags=tags)


class Histogram(Metric):
    """Counts observations in buckets bounded by `boundaries`, with their sum."""

    _kind = metric_values.HISTOGRAM

    def __init__(
        self,
        name: str,
        description: str = "",
        boundaries: list[float] | None = None,
        tag_keys: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__(name, description, tag_keys)
        if boundaries is None or len(boundaries) == 0:
            raise ValueError(
                "boundaries argument should be provided when using "
                "the Histogram class. e.g., "
                'Histogram("name", boundaries=[1.0, 2.0])'
            )
        for i, boundary in enumerate(boundaries):
            if boundary <= 0:
                raise ValueError(
                    "Invalid `boundaries` argument at index "
                    f"{i}, {boundaries}. Use positive values for the arguments."
                )
        self.boundaries = boundaries
        self._declare(boundaries)

    def observe(self, value: float, tags: dict[str, str] | None = None) -> None:
        """Add `value` to the bucket it falls in."""
        if not isinstance(value, (int, float)):
            raise TypeError(f"value must be int or float, got {type(value)}.")
        self._record(value, tags)

    def __reduce__(self) -> Any:
        return Histogram, (self._name, self._description, self.boundaries, self._tag_keys)

    @property
    def info(self) -> dict[str, Any]:
        info = super().info
        info.update({"boundaries": self.boundaries})
        return info


class Gauge(Metric):
    """The last value set (per tag set); it can go up or down."""

    _kind = metric_values.GAUGE

    def __init__(
        self, name: str, description: str = "", tag_keys: tuple[str, ...] | None = None
    ) -> None:
        super().__init__(name, description, tag_keys)
        self._declare()

    def set(self, value: float | None, tags: dict[str, str] | None = None) -> None:
        """Set the gauge to `value`; None does nothing."""
        if value is None:
            return
        if not isinstance(value, (int, float)):
            raise TypeError(f"value must be int or float, got {type(value)}.")
        self._record(value, tags)

    def __reduce__(self) -> Any:
        return Gauge, (self._name, self._description, self._tag_keys)


__all__ = ["Counter", "Gauge", "Histogram"]
