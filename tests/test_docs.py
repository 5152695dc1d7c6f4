"""The docs name every setting and every log event the code uses."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _code() -> str:
    files = [*ROOT.joinpath("app").rglob("*.py"), *ROOT.joinpath("plugins_bridge").rglob("*.py")]
    return "\n".join(p.read_text(encoding="utf-8") for p in files)


def test_every_setting_is_documented() -> None:
    names = set(re.findall(r'"(STOCKQ_[A-Z_]+)"', ROOT.joinpath("app/settings.py").read_text()))
    assert "STOCKQ_REDIS_URL" in names and len(names) > 10
    doc = ROOT.joinpath("docs/configuration.md").read_text(encoding="utf-8")
    missing = sorted(n for n in names if f"`{n}`" not in doc)
    assert missing == []


def test_every_log_event_is_in_the_catalogue() -> None:
    events = set(re.findall(r'log\.(?:debug|info|warning|error|exception)\(\s*"([a-z_.]+)"',
                            _code()))
    events |= set(re.findall(r'"([a-z]+\.[a-z_]+)" if ', _code()))
    events |= set(re.findall(r' else "([a-z]+\.[a-z_]+)"', _code()))
    assert "task.enqueued" in events and "task.deduplicated" in events
    doc = ROOT.joinpath("docs/logging.md").read_text(encoding="utf-8")
    missing = sorted(e for e in events if f"`{e}`" not in doc)
    assert missing == []


def test_every_metric_is_documented() -> None:
    code = ROOT.joinpath("app/api/health.py").read_text(encoding="utf-8")
    names = {re.sub(r"_(count|sum|bucket)$", "", n) for n in re.findall(r"stockq_[a-z_]+", code)}
    assert "stockq_task_duration_seconds" in names and len(names) > 5
    doc = ROOT.joinpath("docs/api.md").read_text(encoding="utf-8")
    assert sorted(n for n in names if n not in doc) == []


def test_every_curl_post_sends_json() -> None:
    """The sidecar refuses changes with a form or text body (415): every curl example
    that POSTs must say it sends JSON."""
    files = [ROOT / "README.md", *sorted(ROOT.joinpath("docs").glob("*.md"))]
    posts = []
    for path in files:
        text = path.read_text(encoding="utf-8").replace("\\\n", " ")
        for line in text.splitlines():
            command = line[line.find("curl "):] if "curl " in line else ""
            if re.search(r"-X\s*POST|\s(-d|--data\S*)\s", command):
                posts.append((path.name, command))
    assert len(posts) >= 3
    missing = [(name, cmd) for name, cmd in posts
               if not re.search(r"-H\s+['\"]Content-Type: application/json['\"]", cmd)]
    assert missing == []
