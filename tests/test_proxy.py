"""The task proxy: set only inside proxy_context(), restored after; settings forms."""

from __future__ import annotations

import os

import pytest

from app.environment import PROXY_ENVIRONMENT, child_environment
from app.errors import ConfigError
from app.settings import load_settings, scrub_proxy_environment
from plugins_bridge.proxy import proxy_context

NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "NO_PROXY", "no_proxy")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*NAMES, "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_set_inside_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("no_proxy", "intranet.example")
    assert os.environ.get("HTTP_PROXY") is None
    with proxy_context("http://u:p@127.0.0.1:3128", ["redis.internal", "ch.internal"]) as url:
        assert url == "http://u:p@127.0.0.1:3128"
        for name in NAMES[:4]:
            assert os.environ[name] == url
        bypass = os.environ["NO_PROXY"].split(",")
        assert bypass[:3] == ["localhost", "127.0.0.1", "::1"]
        assert {"redis.internal", "ch.internal"} <= set(bypass)
    assert all(os.environ.get(n) is None for n in NAMES[:5])
    assert os.environ["no_proxy"] == "intranet.example"


def test_restored_after_an_exception() -> None:
    with pytest.raises(RuntimeError), proxy_context("http://127.0.0.1:3128", []):
        raise RuntimeError("plugin failed")
    assert all(os.environ.get(n) is None for n in NAMES)


def test_without_a_proxy_nothing_changes() -> None:
    with proxy_context("", []) as url:
        assert url is None and all(os.environ.get(n) is None for n in NAMES)


def test_settings_forms() -> None:
    s = load_settings({"STOCKQ_HTTP_PROXY": "http://127.0.0.1:3128",
                       "STOCKQ_REDIS_URL": "redis://cache.internal:6380/0",
                       "STOCKQ_NO_PROXY": "a.internal, b.internal"})
    assert s.http_proxy == "http://127.0.0.1:3128"
    assert s.no_proxy_hosts == ("cache.internal", "a.internal", "b.internal")
    legacy = load_settings({"HTTP_PROXY_ENABLED": "true", "HTTP_PROXY_HOST": "10.0.0.5",
                            "HTTP_PROXY_PORT": "8080", "HTTP_PROXY_USERNAME": "me",
                            "HTTP_PROXY_PASSWORD": "p@ss"})
    assert legacy.http_proxy == "http://me:p%40ss@10.0.0.5:8080"
    assert load_settings({"HTTP_PROXY_ENABLED": "false", "HTTP_PROXY_HOST": "x"}).http_proxy == ""
    with pytest.raises(ConfigError, match="HTTP_PROXY_PORT"):
        load_settings({"HTTP_PROXY_ENABLED": "true", "HTTP_PROXY_HOST": "x"})
    with pytest.raises(ConfigError, match="STOCKQ_HTTP_PROXY"):
        load_settings({"STOCKQ_HTTP_PROXY": "ftp://x:1"})


def test_scrub_and_child_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://ambient:1")
    monkeypatch.setenv("https_proxy", "http://ambient:2")
    monkeypatch.setenv("STOCKQ_HTTP_PROXY", "http://127.0.0.1:3128")
    env = child_environment()
    assert not set(PROXY_ENVIRONMENT) & set(env) and env["STOCKQ_HTTP_PROXY"]
    assert sorted(scrub_proxy_environment()) == ["HTTP_PROXY", "https_proxy"]
    assert "HTTP_PROXY" not in os.environ and "https_proxy" not in os.environ
