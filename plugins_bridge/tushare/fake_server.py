"""A fake TuShare Pro HTTP server with deterministic data, for tests and the offline demo.

Standard library only (plus ``chinese_calendar`` when installed, for holidays)::

    python -m plugins_bridge.tushare.fake_server --host 127.0.0.1 --port 0 [--token T]

prints ``listening http://HOST:PORT/dataapi`` and serves until interrupted.  In tests::

    with FakeTushare(token="t") as fake:      # a free port, in a background thread
        fake.rate_limit_next(1)
        ...TushareClient(fake.url, "t")...
        fake.calls                            # [(api_name, params), ...]

APIs: trade_cal, stock_basic, daily, adj_factor, daily_basic.  Values come from a hash
of (ts_code, date), so every run returns the same numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import threading
from datetime import date, timedelta
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

try:
    import chinese_calendar
except ImportError:  # pragma: no cover - weekdays only
    chinese_calendar = None

DEFAULT_TOKEN = "demo-token"
BAD_TOKEN = {"code": 40101, "msg": "您的token不对，请确认。", "data": None}
RATE_LIMITED = {"code": 40203, "data": None,
                "msg": "抱歉，您每分钟最多访问该接口500次，权限的具体详情访问："
                       "https://tushare.pro/document/1?doc_id=108。"}
# ts_code, name, area, industry, market, list_date
STOCKS = [
    ("000001.SZ", "平安银行", "深圳", "银行", "主板", "19910403"),
    ("000002.SZ", "万科A", "深圳", "全国地产", "主板", "19910129"),
    ("000063.SZ", "中兴通讯", "深圳", "通信设备", "主板", "19971118"),
    ("000333.SZ", "美的集团", "广东", "家用电器", "主板", "20130918"),
    ("000651.SZ", "格力电器", "广东", "家用电器", "主板", "19961118"),
    ("000725.SZ", "京东方A", "北京", "元器件", "主板", "20010112"),
    ("000858.SZ", "五粮液", "四川", "白酒", "主板", "19980427"),
    ("002415.SZ", "海康威视", "浙江", "电器仪表", "主板", "20100528"),
    ("002594.SZ", "比亚迪", "深圳", "汽车整车", "主板", "20110630"),
    ("300750.SZ", "宁德时代", "福建", "电气设备", "创业板", "20180611"),
    ("600000.SH", "浦发银行", "上海", "银行", "主板", "19991110"),
    ("600030.SH", "中信证券", "深圳", "证券", "主板", "20030106"),
    ("600036.SH", "招商银行", "深圳", "银行", "主板", "20020409"),
    ("600276.SH", "恒瑞医药", "江苏", "化学制药", "主板", "20001018"),
    ("600519.SH", "贵州茅台", "贵州", "白酒", "主板", "20010827"),
    ("600887.SH", "伊利股份", "内蒙", "乳制品", "主板", "19960312"),
    ("601318.SH", "中国平安", "深圳", "保险", "主板", "20070301"),
    ("601398.SH", "工商银行", "北京", "银行", "主板", "20061027"),
    ("601888.SH", "中国中免", "北京", "旅游服务", "主板", "20091015"),
    ("688981.SH", "中芯国际", "上海", "半导体", "科创板", "20200716"),
]
NO_PE = {"000725.SZ", "688981.SH"}  # loss-making: pe is None, as TuShare sends it


def _day(text: str) -> date:
    return date(int(text[:4]), int(text[4:6]), int(text[6:8]))


def _ymd(day: date) -> str:
    return day.strftime("%Y%m%d")


@cache
def is_open(day: date) -> bool:
    """A weekday that is not a Chinese public holiday (weekdays only for unknown years)."""
    if day.weekday() >= 5:
        return False
    if chinese_calendar is None:
        return True
    try:
        return not chinese_calendar.is_holiday(day)
    except NotImplementedError:
        return True


@cache
def previous_open(day: date) -> date:
    day -= timedelta(days=1)
    while not is_open(day):
        day -= timedelta(days=1)
    return day


def _unit(*parts: str) -> float:
    """A number in [0, 1) fixed by ``parts``."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@cache
def close_price(code: str, day: date) -> float:
    base = 5 + 195 * _unit(code)
    return round(base * (0.95 + 0.1 * _unit(code, _ymd(day))), 2)


def trade_cal(params: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    today = date.today()
    end = _day(params.get("end_date") or f"{today.year}1231")
    start = _day(params.get("start_date") or f"{end.year}0101")
    wanted = params.get("is_open")
    items = []
    day = end
    while day >= start:  # newest first, like TuShare
        flag = int(is_open(day))
        if wanted in (None, "") or int(wanted) == flag:
            items.append([params.get("exchange") or "SSE", _ymd(day), flag,
                          _ymd(previous_open(day))])
        day -= timedelta(days=1)
    return ["exchange", "cal_date", "is_open", "pretrade_date"], items


def stock_basic(params: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    codes = set(str(params.get("ts_code") or "").split(",")) - {""}
    status = params.get("list_status") or "L"
    items = [[code, code[:6], name, area, industry, market, listed, "L"]
             for code, name, area, industry, market, listed in STOCKS
             if (not codes or code in codes) and status == "L"]
    return ["ts_code", "symbol", "name", "area", "industry", "market", "list_date",
            "list_status"], items


def _pairs(params: dict[str, Any]) -> list[tuple[str, date]]:
    """(ts_code, open day) pairs a daily-style query asks for, newest day first."""
    codes = set(str(params.get("ts_code") or "").split(",")) - {""}
    if params.get("trade_date"):
        days = [_day(params["trade_date"])]
    elif codes:
        end = _day(params.get("end_date") or _ymd(date.today()))
        start = _day(params.get("start_date") or _ymd(end - timedelta(days=365)))
        days = [end - timedelta(days=n) for n in range((end - start).days + 1)]
    else:
        raise ValueError("参数错误：ts_code和trade_date至少输入一个")
    listed = {code: _day(listed) for code, *_, listed in STOCKS}
    return [(code, day) for day in days if is_open(day) for code in sorted(listed)
            if (not codes or code in codes) and day >= listed[code]]


def daily(params: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    items = []
    for code, day in _pairs(params):
        close, pre_close = close_price(code, day), close_price(code, previous_open(day))
        day_open = round(pre_close * (0.98 + 0.04 * _unit(code, _ymd(day), "open")), 2)
        high = round(max(day_open, close) * (1 + 0.02 * _unit(code, _ymd(day), "high")), 2)
        low = round(min(day_open, close) * (1 - 0.02 * _unit(code, _ymd(day), "low")), 2)
        vol = round(10_000 + 990_000 * _unit(code, _ymd(day), "vol"), 2)
        change = round(close - pre_close, 2)
        items.append([code, _ymd(day), day_open, high, low, close, pre_close, change,
                      round(change / pre_close * 100, 4), vol,
                      round(vol * (high + low) / 20, 3)])
    return ["ts_code", "trade_date", "open", "high", "low", "close", "pre_close", "change",
            "pct_chg", "vol", "amount"], items


def adj_factor(params: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    items = [[code, _ymd(day), round(1 + 10 * _unit(code) + 0.05 * (day.year - 1990), 3)]
             for code, day in _pairs(params)]
    return ["ts_code", "trade_date", "adj_factor"], items


def daily_basic(params: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    items = []
    for code, day in _pairs(params):
        close, u = close_price(code, day), _unit(code, _ymd(day), "basic")
        shares = 1e5 + 5e6 * _unit(code, "shares")  # 万股
        items.append([code, _ymd(day), close, round(0.2 + 5 * u, 4), round(0.5 + u, 2),
                      None if code in NO_PE else round(5 + 60 * _unit(code, "pe") + u, 4),
                      round(0.5 + 8 * _unit(code, "pb"), 4), round(close * shares, 4),
                      round(close * shares * 0.8, 4)])
    return ["ts_code", "trade_date", "close", "turnover_rate", "volume_ratio", "pe", "pb",
            "total_mv", "circ_mv"], items


APIS = {f.__name__: f for f in (trade_cal, stock_basic, daily, adj_factor, daily_basic)}


class FakeTushare:
    """The fake server; ``start()`` serves it from a background thread.

    Knobs: ``token`` (None accepts any), ``page_limit`` (most rows in one reply),
    ``delay`` (seconds before each reply), :meth:`fail_next`, :meth:`rate_limit_next`,
    ``empty_unknown`` (an API it does not serve answers with no rows, in the fields
    asked for, instead of TuShare's "wrong API name" error: for runs of many plugins);
    ``calls`` records ``(api_name, params)`` of every request."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 token: str | None = DEFAULT_TOKEN, page_limit: int = 6000,
                 empty_unknown: bool = False) -> None:
        self.token = token
        self.page_limit = page_limit
        self.empty_unknown = empty_unknown
        self.delay = 0.0
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._failures: list[tuple[int, str, dict[str, str]]] = []
        self._rate_limits = 0
        self._thread: threading.Thread | None = None
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/dataapi"

    def fail_next(self, n: int, status: int = 500, *, body: str = "Internal Server Error",
                  retry_after: str | None = None) -> None:
        """Answer the next ``n`` requests with HTTP ``status``."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self._failures += [(status, body, headers)] * n

    def rate_limit_next(self, n: int) -> None:
        """Answer the next ``n`` requests with TuShare's per-minute quota reply."""
        with self._lock:
            self._rate_limits += n

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the command line)."""
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self._server.server_close()

    def start(self) -> FakeTushare:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name="fake-tushare", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes delayed replies
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> FakeTushare:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reply(self, body: dict[str, Any]) -> tuple[int, str, dict[str, str]]:
        """``(status, text, headers)`` for one request body (also for direct tests)."""
        api = str(body.get("api_name") or "")
        raw = body.get("params")
        params: dict[str, Any] = dict(raw) if isinstance(raw, dict) else {}
        with self._lock:
            self.calls.append((api, params))
            if self._failures:
                return self._failures.pop(0)
        if self._stopping.wait(self.delay) and self.delay:
            return 503, "stopping", {}
        if self.token is not None and body.get("token") != self.token:
            return 200, json.dumps(BAD_TOKEN, ensure_ascii=False), {}
        with self._lock:
            limited, self._rate_limits = self._rate_limits > 0, max(self._rate_limits - 1, 0)
        if limited:
            return 200, json.dumps(RATE_LIMITED, ensure_ascii=False), {}
        return 200, json.dumps(self._data(api, params, str(body.get("fields") or "")),
                               ensure_ascii=False), {}

    def _data(self, api: str, params: dict[str, Any], fields: str) -> dict[str, Any]:
        if api not in APIS:
            if self.empty_unknown:
                wanted = [c.strip() for c in fields.split(",") if c.strip()]
                return {"request_id": f"fake-{len(self.calls)}", "code": 0, "msg": "",
                        "data": {"fields": wanted, "items": [], "has_more": False}}
            return {"code": -1, "msg": f"api名称错误: {api}", "data": None}
        try:
            columns, items = APIS[api](params)
        except (ValueError, KeyError, TypeError) as exc:
            return {"code": -1, "msg": str(exc), "data": None}
        wanted = [c for c in fields.split(",") if c.strip() in columns]
        if wanted:
            picks = [columns.index(c.strip()) for c in wanted]
            columns, items = [columns[i] for i in picks], [[r[i] for i in picks] for r in items]
        offset = int(params.get("offset") or 0)
        limit = min(int(params.get("limit") or self.page_limit), self.page_limit)
        page = items[offset:offset + limit]
        return {"request_id": f"fake-{len(self.calls)}", "code": 0, "msg": "",
                "data": {"fields": columns, "items": page,
                         "has_more": offset + len(page) < len(items)}}

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers: dict[str, str] = {}
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    status, text = 400, "request body is not a JSON object"
                else:
                    body.setdefault("api_name", self.path.rstrip("/").rpartition("/")[2])
                    status, text, headers = fake.reply(body)
                data = text.encode()
                kind = "application/json" if text.startswith("{") else "text/plain"
                try:
                    self.send_response(status)
                    for name, value in {"Content-Type": f"{kind}; charset=utf-8",
                                        "Content-Length": str(len(data)), **headers}.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--page-limit", type=int, default=6000)
    args = parser.parse_args(argv)
    fake = FakeTushare(args.host, args.port, token=args.token, page_limit=args.page_limit)
    print(f"listening {fake.url}", flush=True)
    fake.serve_forever()


if __name__ == "__main__":
    main()
