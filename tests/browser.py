"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol with
aiohttp's WebSocket client: navigate, evaluate, click like a mouse, take screenshots,
and collect every console error, uncaught exception and failed load of the page."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio")
INSTALL = ("Debian's chromium is not installed: ops/test.sh installs it (as root, with "
           "apt-get, like redis-server), or run `apt-get install chromium`")
WIDTH, HEIGHT = 1280, 860


def chromium_path() -> str | None:
    return os.environ.get("STOCKQ_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")


class Browser:
    """One Chromium process with one page."""

    def __init__(self, proc: subprocess.Popen[bytes], profile: Path,
                 session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.proc = proc
        self.profile = profile
        self.session = session
        self.ws = ws
        self.errors: list[str] = []
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def start(cls) -> Browser:
        exe = chromium_path()
        if exe is None:
            raise RuntimeError(INSTALL)
        profile = Path(tempfile.mkdtemp(prefix="stockq-chromium-"))
        proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        try:
            async with asyncio.timeout(60):
                while not port_file.exists() or len(port_file.read_text().split()) < 2:
                    if proc.poll() is not None:
                        raise RuntimeError(f"chromium exited with {proc.returncode} at start")
                    await asyncio.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            session = aiohttp.ClientSession()
            async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            ws = await session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        except BaseException:
            proc.kill()
            proc.wait()
            shutil.rmtree(profile, ignore_errors=True)
            raise
        browser = cls(proc, profile, session, ws)
        for domain in ("Page", "Runtime", "Log"):
            await browser.send(f"{domain}.enable")
        await browser.send("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                           deviceScaleFactor=1, mobile=False)
        return browser

    async def close(self) -> None:
        self._reader.cancel()
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)

    # ------------------------------------------------------------ protocol
    async def send(self, method: str, **params: Any) -> Any:
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call_id] = future
        await self.ws.send_str(json.dumps({"id": call_id, "method": method, "params": params}))
        async with asyncio.timeout(60):
            return await future

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(RuntimeError(f"DevTools: {data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
            else:
                self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            texts = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
            self.errors.append("console." + params["type"] + ": " + " ".join(texts))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"uncaught: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")

    # ------------------------------------------------------------ the page
    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)
        await self.wait_for("document.readyState === 'complete'", 30, "the page to load")

    async def eval(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float, what: str) -> Any:
        """Evaluate ``expression`` until it is truthy (an element counts as true); its
        value then; fail after ``timeout`` seconds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = await self.eval(f"(() => {{ const v = ({expression}); "
                                    "return v instanceof Node ? true : v; })()")
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                                     f"({expression})")
            await asyncio.sleep(0.1)

    async def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element (scrolled into view): what
        covers it, or a disabled button, gets the click as it would for a person."""
        box = await self.eval(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " if (!el) return null; el.scrollIntoView({block: 'center'});"
            " const r = el.getBoundingClientRect();"
            " return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()")
        if box is None:
            raise AssertionError(f"nothing on the page matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"],
                            button="left", clickCount=1)

    async def type(self, selector: str, text: str) -> None:
        """Focus the element and type ``text`` into it, as a keyboard would."""
        focused = await self.eval(f"(() => {{ const el = document.querySelector("
                                  f"{json.dumps(selector)}); if (!el) return false; "
                                  "el.focus(); return document.activeElement === el; })()")
        if not focused:
            raise AssertionError(f"cannot focus {selector!r}")
        await self.send("Input.insertText", text=text)

    async def screenshot(self, path: Path) -> None:
        """The whole page (up to 3,000 px high) as a PNG."""
        height = await self.eval("Math.min(3000, document.documentElement.scrollHeight)")
        await self.eval("window.scrollTo(0, 0)")
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True,
                               clip={"x": 0, "y": 0, "width": WIDTH,
                                     "height": max(HEIGHT, int(height)), "scale": 1})
        path.write_bytes(base64.b64decode(shot["data"]))
