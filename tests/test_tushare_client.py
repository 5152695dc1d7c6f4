"""The TuShare client against the fake TuShare server, over real HTTP on loopback."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.settings import Settings
from plugins_bridge.errors import ConfigurationError, NetworkError, PluginError, RateLimited
from plugins_bridge.proxy import proxy_context
from plugins_bridge.tushare import (
    TushareApiError,
    TushareBadRequest,
    TushareClient,
    TushareError,
    TushareNetworkError,
    TusharePermissionError,
    TushareRateLimited,
    TushareTokenError,
    error_for_code,
)
from plugins_bridge.tushare.fake_server import FakeTushare

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token-0123456789abcdef"


pytestmark = pytest.mark.usefixtures("no_ambient_proxy")


@pytest.fixture
def fake() -> Iterator[FakeTushare]:
    with FakeTushare(token=TOKEN) as server:
        yield server


@pytest.fixture
def client(fake: FakeTushare) -> Iterator[TushareClient]:
    with TushareClient(fake.url, TOKEN, timeout=5) as tushare:
        yield tushare


def _raised(client: TushareClient, api: str = "stock_basic",
            params: dict[str, str] | None = None) -> PluginError:
    with pytest.raises(PluginError) as info:
        client.query(api, params)
    assert TOKEN not in str(info.value) and TOKEN not in info.value.message
    return info.value


def test_rows_and_fields(fake: FakeTushare, client: TushareClient) -> None:
    rows = client.query("stock_basic", {"list_status": "L"}, ["ts_code", "name"])
    assert len(rows) == 20
    assert rows[0] == {"ts_code": "000001.SZ", "name": "平安银行"}
    daily = client.query("daily", {"trade_date": "20260930"}, "ts_code,close,pct_chg")
    assert {tuple(row) for row in daily} == {("ts_code", "close", "pct_chg")}
    assert daily == client.query("daily", {"trade_date": "20260930"}, "ts_code,close,pct_chg")
    assert fake.calls[0] == ("stock_basic", {"list_status": "L"})
    basic = client.query("daily_basic", {"trade_date": "20260930"})
    assert sum(row["pe"] is None for row in basic) == 2


def test_pagination_with_page_size(fake: FakeTushare, client: TushareClient) -> None:
    rows = client.query("stock_basic", page_size=6)
    assert [row["ts_code"] for row in rows] == [row["ts_code"]
                                                for row in client.query("stock_basic")]
    assert len(rows) == 20
    offsets = [(params["limit"], params["offset"]) for _, params in fake.calls[:4]]
    assert offsets == [(6, 0), (6, 6), (6, 12), (6, 18)]


def test_pagination_follows_has_more_without_page_size(fake: FakeTushare,
                                                       client: TushareClient) -> None:
    fake.page_limit = 7  # the server caps each reply, as TuShare does
    rows = client.query("stock_basic")
    assert len(rows) == 20 and len({row["ts_code"] for row in rows}) == 20
    assert [params.get("offset") for _, params in fake.calls] == [None, 7, 14]


def test_pagination_stops_at_an_empty_page(fake: FakeTushare, client: TushareClient) -> None:
    rows = client.query("stock_basic", page_size=5)
    assert len(rows) == 20 and len(fake.calls) == 4  # the 4th page says has_more false
    fake.fail_next(1, 200, body='{"code": 0, "msg": "", "data": {"fields": ["ts_code"], '
                                '"items": [], "has_more": true}}')
    assert client.query("stock_basic", page_size=5) == []
    assert len(fake.calls) == 5


def test_missing_token_makes_no_request(fake: FakeTushare) -> None:
    with TushareClient(fake.url, "  ") as client, pytest.raises(ConfigurationError) as info:
        client.query("stock_basic")
    assert "TUSHARE_TOKEN" in info.value.message and isinstance(info.value, TushareTokenError)
    assert info.value.error_type == "config_error"
    assert fake.calls == []


def test_bad_token_is_a_configuration_error(fake: FakeTushare) -> None:
    with TushareClient(fake.url, "wrong-token") as client:
        error = _raised(client)
    assert isinstance(error, TushareTokenError) and isinstance(error, ConfigurationError)
    assert "token不对" in error.message and error.error_type == "config_error"


def test_rate_limit_reply(fake: FakeTushare, client: TushareClient) -> None:
    fake.rate_limit_next(1)
    error = _raised(client)
    assert isinstance(error, TushareRateLimited) and isinstance(error, RateLimited)
    assert error.retry_after == 60 and error.error_type == "rate_limit"
    assert len(client.query("stock_basic")) == 20  # the next request goes through


def test_http_429_uses_retry_after(fake: FakeTushare, client: TushareClient) -> None:
    fake.fail_next(1, 429, body="slow down", retry_after="7")
    fake.fail_next(1, 429, body="slow down")
    assert _raised(client).retry_after == 7
    error = _raised(client)
    assert isinstance(error, RateLimited) and error.retry_after == 60


@pytest.mark.parametrize("status", [500, 502, 404])
def test_http_error_is_never_an_empty_result(fake: FakeTushare, client: TushareClient,
                                             status: int) -> None:
    fake.fail_next(1, status, body=f"upstream broke; token={TOKEN}")
    error = _raised(client)  # also checks the echoed token is redacted
    assert isinstance(error, NetworkError) and isinstance(error, TushareNetworkError)
    assert error.error_type == "network" and f"HTTP {status}" in error.message
    assert "token=***" in error.message


def test_a_body_that_is_not_json_is_a_network_error(fake: FakeTushare,
                                                    client: TushareClient) -> None:
    fake.fail_next(1, 200, body="<html>proxy login</html>")
    error = _raised(client)
    assert isinstance(error, NetworkError) and "not JSON" in error.message


def test_connection_refused_is_a_network_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with TushareClient(f"http://127.0.0.1:{port}/dataapi", TOKEN, timeout=2) as client:
        error = _raised(client)
    assert isinstance(error, TushareNetworkError) and error.error_type == "network"


def test_timeout_is_a_network_error(fake: FakeTushare) -> None:
    fake.delay = 5.0
    with TushareClient(fake.url, TOKEN, timeout=0.2) as client:
        error = _raised(client)
    assert isinstance(error, NetworkError) and "no reply within 0.2s" in error.message


def test_unknown_api_is_bad_parameters(client: TushareClient) -> None:
    error = _raised(client, "no_such_api")
    assert isinstance(error, TushareBadRequest) and error.error_type == "bad_params"


@pytest.mark.parametrize(("code", "message", "kind", "error_type", "wait"), [
    (40203, "抱歉，您每分钟最多访问该接口500次", TushareRateLimited, "rate_limit", 60),
    (40203, "抱歉，您每小时最多访问该接口20次", TushareRateLimited, "rate_limit", 3600),
    (40203, "抱歉，您每天最多访问该接口20000次", TushareRateLimited, "rate_limit", 3600),
    (40203, "抱歉，您没有访问该接口的权限", TusharePermissionError, "config_error", None),
    (-1, "积分不足", TusharePermissionError, "config_error", None),
    (40001, "", TushareTokenError, "config_error", None),
    (-2001, "token不对", TushareTokenError, "config_error", None),
    (50000, "系统内部错误", TushareApiError, "tushare_error", None),
])
def test_reply_codes(code: int, message: str, kind: type[TushareError], error_type: str,
                     wait: float | None) -> None:
    error = error_for_code(code, message)
    assert type(error) is kind and error.error_type == error_type
    assert error.retry_after == wait and error.code == code


def test_trade_cal_holidays(client: TushareClient) -> None:
    rows = client.query("trade_cal", {"exchange": "SSE", "start_date": "20260930",
                                      "end_date": "20261001"})
    assert rows == [
        {"exchange": "SSE", "cal_date": "20261001", "is_open": 0, "pretrade_date": "20260930"},
        {"exchange": "SSE", "cal_date": "20260930", "is_open": 1, "pretrade_date": "20260929"},
    ]
    open_days = client.query("trade_cal", {"start_date": "20260926", "end_date": "20261012",
                                           "is_open": "1"}, "cal_date")
    assert [row["cal_date"] for row in open_days] == ["20261012", "20261009", "20261008",
                                                      "20260930", "20260929", "20260928"]


def test_from_settings(fake: FakeTushare) -> None:
    settings = Settings(tushare_url=fake.url, tushare_token=TOKEN, tushare_timeout=3)
    with TushareClient.from_settings(settings) as client:
        assert client.timeout == 3 and TOKEN not in repr(client)
        assert len(client.query("adj_factor", {"ts_code": "600519.SH",
                                               "trade_date": "20260930"})) == 1


def test_proxies_are_used(fake: FakeTushare) -> None:
    proxy = fake.url.removesuffix("/dataapi")  # the fake also answers proxy-style requests
    with TushareClient("http://tushare.invalid/dataapi", TOKEN, timeout=5,
                       proxies={"http": proxy}) as client:
        assert len(client.query("stock_basic")) == 20
    with TushareClient("http://tushare.invalid/dataapi", TOKEN, timeout=5) as client, \
            proxy_context(proxy, ()):
        assert len(client.query("stock_basic")) == 20  # the task's environment proxy
    assert [api for api, _ in fake.calls] == ["stock_basic", "stock_basic"]


def test_fake_server_command_line() -> None:
    command = [sys.executable, str(ROOT / "ops" / "fake_tushare.py"), "--host", "127.0.0.1",
               "--port", "0", "--token", "cli-token"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line.startswith("listening http://127.0.0.1:") and line.endswith("/dataapi")
            with TushareClient(line.split()[1], "cli-token", timeout=5) as client:
                rows = client.query("daily", {"ts_code": "000001.SZ", "start_date": "20260928",
                                              "end_date": "20261009"})
        finally:
            proc.terminate()
    assert [row["trade_date"] for row in rows] == ["20261009", "20261008", "20260930",
                                                   "20260929", "20260928"]
