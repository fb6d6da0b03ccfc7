"""config.py: every setting has a RAYLITE_* override, read by load()."""

from __future__ import annotations

import pytest

from raylite import config


def _settings() -> list[str]:
    return list(config.SETTINGS)


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start each test from the defaults (the test run sets RAYLITE_LOCK_CHECKS)."""
    for name in _settings():
        monkeypatch.delenv(f"RAYLITE_{name.upper()}", raising=False)


@pytest.mark.parametrize("name", _settings())
def test_each_setting_is_overridden_by_its_environment_variable(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = getattr(config.Config(), name)
    assert type(default) in (int, float), f"{name}: a setting is a number"
    wanted = type(default)(default * 2 + 3)  # differs from the default, keeps the type
    monkeypatch.setenv(f"RAYLITE_{name.upper()}", str(wanted))
    loaded = config.load()
    assert getattr(loaded, name) == wanted
    assert type(getattr(loaded, name)) is type(default)
    others = {n: getattr(loaded, n) for n in _settings() if n != name}
    assert others == {n: getattr(config.Config(), n) for n in _settings() if n != name}, (
        "one variable set more than its own setting"
    )


def test_without_overrides_load_gives_the_defaults() -> None:
    assert config.load() == config.Config()


def test_a_malformed_override_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYLITE_KILL_GRACE_S", "soon")
    with pytest.raises(ValueError, match="soon"):
        config.load()


def test_a_config_is_frozen_and_knows_its_settings() -> None:
    cfg = config.Config(lease_linger_s=0.5)
    assert cfg.lease_linger_s == 0.5
    assert cfg.max_pending_leases == config.Config().max_pending_leases  # the default
    assert cfg != config.Config()
    assert cfg == config.Config(lease_linger_s=0.5)
    assert config.Config().replace(lease_linger_s=0.5) == cfg
    with pytest.raises(AttributeError, match="frozen"):
        cfg.lease_linger_s = 1.0
    with pytest.raises(TypeError, match="no_such_setting"):
        config.Config(no_such_setting=1)
    assert "lease_linger_s=0.5" in repr(cfg)
