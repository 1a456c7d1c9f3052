"""Every curl example of README.md, run against a real ``matchcast api`` and ``matchcast worker`` on the test stack.

The README is parsed as it stands, so editing an example changes what runs. A ``# ->`` comment (continued on
lines ``#    ...``) under a command states its answer: an optional status (200 when none is given), then the body
in JSON with ellipses. What the comment shows is checked: every key it names is present; strings, integers,
``null`` and booleans are equal; a float is a number (the README's come from the model that ``make up`` trains on
all the bundled data, the stack's from a smaller one). An ellipsis stands for what depends on the run: ``"..."``
any value, ``"v4-..."`` any text after ``v4-``, ``{...}`` any object, ``[...]`` any list, ``...`` more members or
items; ``"6f0c..."`` names an id, taken from the first answer that shows it and put into later commands.

Substituted: ``$KEY`` (an admin key of the stack), the README's host and port (the API's), match ids (those of
the bundled data as ``make up`` loads it, mapped to the same matches on the stack: ``MatchIds``) and the dead
letter to replay (the newest one the listing before shows; the test records one).
"""

from __future__ import annotations

import json
import re
import shlex
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from matchcast.config import Settings
from matchcast.data.dead_letters import DeadLetters
from matchcast.service.wiring import store_for
from matchcast.tasks.names import PREDICT_TASK
from tests.conftest import ApiProcess, MatchIds, api_key

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"
README_BASE = "http://127.0.0.1:8000"
# The stack holds recent seasons of two leagues, not the 59,079 matches `make up` loads: these answers differ.
DATA_DEPENDENT = {("training_window", "start"), ("training_window", "end")}
TRANSIENT = {"PENDING", "STARTED", "RETRY"}
MORE, ANY, ANY_OBJECT, ANY_LIST = "\0more", "\0any", "\0object", "\0list"
_PLACEHOLDER = re.compile(r"([A-Za-z0-9]+)?\.\.\.")


@dataclass
class Example:
    """One curl command of the README and the answer its ``# ->`` comment states."""

    line: int
    command: str
    status: int = 200
    expected: Any = None
    args: list[str] = field(default_factory=list)


def examples(text: str) -> list[Example]:
    """The curl commands of the README's bash blocks, in order, each with its stated answer."""
    found: list[Example] = []
    lines = text.splitlines()
    in_block, i = False, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            in_block = line.strip() == "```bash"
        elif in_block and line.startswith("curl "):
            start, command = i, line
            while command.endswith("\\") or not _complete(command):
                i += 1
                command = command.removesuffix("\\") + "\n" + lines[i]
            example = Example(start + 1, command, args=shlex.split(command, comments=True))
            if i + 1 < len(lines) and lines[i + 1].startswith("# ->"):
                i += 1
                stated = lines[i].removeprefix("# ->")
                while i + 1 < len(lines) and re.match(r"#\s{2,}", lines[i + 1]):
                    i += 1
                    stated += " " + lines[i][1:].strip()
                status, _, body = (
                    stated.strip().partition(" ") if re.match(r"\d{3}\b", stated.strip()) else ("", "", "")
                )
                example.status = int(status) if status else 200
                example.expected = stated_body(body if status else stated.strip())
            found.append(example)
        i += 1
    return found


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # a quote still open: the command goes on on the next line
        return False
    return True


def stated_body(text: str) -> Any:
    """A ``# ->`` body (JSON with ellipses) as JSON, each ellipsis outside a string as a marker."""
    if not text:
        return None
    out, stack = [], []
    for token in re.finditer(r'"(?:[^"\\]|\\.)*"|\{\.\.\.[\w.]*\}|\[\.\.\.\]|\.\.\.|[{}\[\]]|[^"{}\[\].]+|\.', text):
        t = token.group()
        if t in "{[":
            stack.append(t)
        elif t in "}]":
            stack.pop()
        if t.startswith("{..."):
            t = json.dumps(ANY_OBJECT)
        elif t == "[...]":
            t = json.dumps(ANY_LIST)
        elif t == "...":
            in_object = bool(stack) and stack[-1] == "{"
            before = "".join(out).rstrip()
            t = f"{json.dumps(MORE)}: null" if in_object else json.dumps(MORE if before.endswith(("[", ",")) else ANY)
        out.append(t)
    return json.loads("".join(out))


@dataclass
class Run:
    """What the examples share: the stack, and the ids the answers so far have shown."""

    base: str
    key: str
    match_ids: MatchIds
    bound: dict[str, str] = field(default_factory=dict)  # "6f0c..." -> the task id it stands for
    answers: dict[str, Any] = field(default_factory=dict)  # path -> last JSON answer

    def fill(self, text: str) -> str:
        for placeholder, value in self.bound.items():
            text = text.replace(placeholder, value)
        return text.replace("$KEY", self.key)

    def request(self, example: Example) -> httpx.Request:
        method, headers, data, url = "GET", {}, None, None
        args = iter(example.args[1:])
        for arg in args:
            if arg == "-H":
                name, _, value = next(args).partition(":")
                headers[name.strip()] = self.fill(value.strip())
            elif arg == "-X":
                method = next(args)
            elif arg == "-d":
                data = self.body(json.loads(self.fill(next(args))))
                method = "POST" if method == "GET" else method
            elif arg.startswith(README_BASE):
                url = self.url(self.fill(arg).removeprefix(README_BASE))
            else:
                raise AssertionError(f"README line {example.line}: curl option {arg!r} is not understood")
        assert url is not None, f"README line {example.line}: no URL"
        content = None if data is None else json.dumps(data).encode()
        return httpx.Request(method, self.base + url, headers=headers, content=content)

    def url(self, path: str) -> str:
        path = re.sub(
            r"^(/predict/(?:matches/)?)(\d+)(\?.*)?$",
            lambda m: m[1] + str(self.match_ids(int(m[2]))) + (m[3] or ""),
            path,
        )
        listing = self.answers.get("/monitoring/dead_letters")
        if listing is not None:  # the README replays the dead letter its listing shows
            path = re.sub(
                r"^/monitoring/dead_letters/\d+/", f"/monitoring/dead_letters/{listing['items'][0]['id']}/", path
            )
        return path

    def body(self, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: self.stack_ids(v) if k in ("match_id", "match_ids") else self.body(v) for k, v in data.items()}
        return [self.body(v) for v in data] if isinstance(data, list) else data

    def stack_ids(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.stack_ids(v) for v in value]
        return self.match_ids(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def check(self, actual: Any, stated: Any, where: tuple[str, ...] = ()) -> list[str]:
        """Where ``actual`` differs from what the README states (binding the ids it names on first sight)."""
        at = ".".join(where) or "body"
        if stated in (ANY, MORE):
            return []
        if stated == ANY_OBJECT:
            return [] if isinstance(actual, dict) else [f"{at}: an object was stated, got {actual!r}"]
        if stated == ANY_LIST:
            return [] if isinstance(actual, list) else [f"{at}: a list was stated, got {actual!r}"]
        if isinstance(stated, dict):
            if not isinstance(actual, dict):
                return [f"{at}: an object was stated, got {actual!r}"]
            problems = []
            for k, v in stated.items():
                if k == MORE:
                    continue
                if k not in actual:
                    problems.append(f"{at}: no key {k!r} (keys: {sorted(actual)})")
                else:
                    v = self.stack_ids(v) if k == "match_id" else v
                    problems += self.check(actual[k], v, (*where, k))
            return problems
        if isinstance(stated, list):
            items = [v for v in stated if v != MORE]
            ok = isinstance(actual, list) and (
                len(actual) >= len(items) if MORE in stated else len(actual) == len(items)
            )
            if not ok:
                return [f"{at}: {len(items)} items{' or more' if MORE in stated else ''} stated, got {actual!r}"]
            return [p for n, v in enumerate(items) for p in self.check(actual[n], v, (*where, str(n)))]
        if where[-2:] in DATA_DEPENDENT:
            return [] if type(actual) is type(stated) else [f"{at}: {stated!r} stated, got {actual!r}"]
        if isinstance(stated, float):
            ok = isinstance(actual, int | float) and not isinstance(actual, bool)
            return [] if ok else [f"{at}: a number was stated, got {actual!r}"]
        if isinstance(stated, str) and "..." in stated:
            return self.check_pattern(actual, stated, at)
        return [] if actual == stated and type(actual) is type(stated) else [f"{at}: {stated!r} stated, got {actual!r}"]

    def check_pattern(self, actual: Any, stated: str, at: str) -> list[str]:
        pattern, names = "", []
        for n, part in enumerate(_PLACEHOLDER.split(stated)):
            if n % 2 == 0:
                pattern += re.escape(part or "")
            elif part is None:  # a bare "...": any text
                pattern += ".*"
            elif (placeholder := f"{part}...") in self.bound:
                pattern += re.escape(self.bound[placeholder])
            else:
                names.append(placeholder)
                pattern += f"(?P<p{len(names)}>[A-Za-z0-9-]+)"
        # re.split with one group yields [text, group, text, ...]; the lone "..." leaves the group None
        found = re.fullmatch(pattern, actual) if isinstance(actual, str) else None
        if found is None:
            return [f"{at}: {stated!r} stated, got {actual!r}"]
        for n, name in enumerate(names, 1):
            self.bound[name] = found[f"p{n}"]
        return []


def send(run: Run, example: Example) -> httpx.Response:
    """The example's request; a poll is repeated while its task is still on its way to the stated state."""
    deadline = time.monotonic() + 30
    while True:
        with httpx.Client(timeout=30) as client:
            response = client.send(run.request(example))
        stated = example.expected if isinstance(example.expected, dict) else {}
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else None
        polling = isinstance(body, dict) and body.get("status") in TRANSIENT and stated.get("status") not in TRANSIENT
        if not polling or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_the_readme_has_its_examples() -> None:
    """Every curl line of the README is an example the test runs, and the parser reads what it shows."""
    text = README.read_text()
    found = examples(text)
    assert len(found) == len(re.findall(r"^curl ", text, flags=re.MULTILINE)) >= 14
    assert stated_body('{"a": 1, ..., "b": [{...x...}, ...], "c": "6f0c...", "d": [...]}') == {
        "a": 1,
        MORE: None,
        "b": [ANY_OBJECT, MORE],
        "c": "6f0c...",
        "d": ANY_LIST,
    }
    run = Run("", "", match_ids=None)  # type: ignore[arg-type]
    assert run.check({"id": "abc-1", "url": "/t/abc-1"}, {"id": "6f0c...", "url": "/t/6f0c..."}) == []
    assert run.check({"url": "/t/other"}, {"url": "/t/6f0c..."}) == ["url: '/t/6f0c...' stated, got '/t/other'"]
    assert run.check({"v": "v4-cb31bd41"}, {"v": "v1-..."}) == ["v: 'v1-...' stated, got 'v4-cb31bd41'"]


def test_every_readme_example_answers_as_documented(
    live_api: ApiProcess, stack_settings: Settings, match_ids: MatchIds
) -> None:
    store = store_for(stack_settings)
    # Something to replay: a dead letter of a prediction the worker gave up on (the README's "dead_letters/1").
    DeadLetters(store).record(
        task_id=f"readme-{uuid.uuid4()}",
        task_name=PREDICT_TASK,
        args=[{"match_id": match_ids(58754)}],
        reason="retries_exhausted",
        error="OperationalError: the database was away",
        attempts=4,
    )
    run = Run(live_api.base, api_key(stack_settings, "admin"), match_ids)
    problems = []
    for example in examples(README.read_text()):
        response = send(run, example)
        where = f"README line {example.line}: {' '.join(example.args[:6])}"
        if response.status_code != example.status:
            problems.append(f"{where}: {example.status} stated, got {response.status_code}: {response.text[:400]}")
            continue
        if response.headers.get("content-type", "").startswith("application/json"):
            run.answers[httpx.URL(str(response.request.url)).path] = response.json()
        if example.expected is not None:
            problems += [f"{where}: {p}" for p in run.check(response.json(), example.expected)]
    assert not problems, "\n".join(problems)
