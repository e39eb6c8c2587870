"""``tickwork run``'s configuration: command line > environment > config file > default.

The layering tests parse real command lines, environments and TOML files through the
real command, with the node itself replaced by a recorder of what it was given; the
refusals and one end-to-end start run ``tickwork run`` as a subprocess.
"""

from __future__ import annotations

import base64
import gc
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import click
import pytest
import trio
from click.testing import CliRunner

import tickwork.cli._run
from tests.support.cli import Node, error_line
from tickwork.cli import cli
from tickwork.cli._config import HANDOFF_SETTINGS, ConfiguredCommand, env_name, file_key
from tickwork.task import Task
from tickwork.tasks import HandoffSettings, WebhookTask, builtin_tasks

DOCS = Path(__file__).parent.parent / "docs" / "operations.md"
#: the tasks `tickwork run` registers without --tasks (bash and the hand-off tasks)
BUILTIN = {task.name for task in builtin_tasks()}


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What ``tickwork run`` would start the node with, instead of starting it."""
    seen: dict[str, Any] = {}

    async def fake_serve(db: object, tasks: object, **kwargs: Any) -> int:
        seen.update(kwargs, db=db, tasks=tasks, meta=dict(click.get_current_context().meta))
        return 0

    monkeypatch.setattr(tickwork.cli._run, "_serve", fake_serve)
    monkeypatch.setattr(tickwork.cli._run, "setup_cli_logging", lambda _level: None)
    monkeypatch.setattr(gc, "freeze", lambda: None)  # the test process's heap is not the node's
    for name in list(os.environ):
        if name.startswith("TICKWORK_"):
            monkeypatch.delenv(name)
    return seen


def invoke(args: list[str], env: dict[str, str] | None = None) -> click.testing.Result:
    result = CliRunner().invoke(cli, args, env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_each_level_overrides_the_next(served: dict[str, Any], tmp_path: Path) -> None:
    config = write(
        tmp_path / "tickwork.toml",
        'window = "2h"\nmax-concurrency = 7\nmax-in-memory = 9\nnode-id = "from-file"\n'
        f'db = "{tmp_path / "file.db"}"\nlog-level = "ERROR"\n',
    )
    env = {"TICKWORK_MAX_CONCURRENCY": "8", "TICKWORK_MAX_IN_MEMORY": "10"}

    # default < file
    invoke(["run", "--config", str(config)])
    assert served["window"] == timedelta(hours=2)
    assert served["max_concurrency"] == 7
    assert served["node_id"] == "from-file"
    assert served["db"] == tmp_path / "file.db"
    assert served["meta"]["tickwork.log_level"] == "ERROR"
    assert served["shutdown_grace"] == timedelta(seconds=30)  # in no layer: the default

    # file < environment
    invoke(["run", "--config", str(config)], env=env)
    assert (served["max_concurrency"], served["max_in_memory"]) == (8, 10)
    assert served["window"] == timedelta(hours=2)

    # environment < command line
    invoke(["run", "--config", str(config), "--max-concurrency", "11"], env=env)
    assert (served["max_concurrency"], served["max_in_memory"]) == (11, 10)

    # the file's path from the environment, too
    invoke(["run"], env={"TICKWORK_CONFIG": str(config)})
    assert served["node_id"] == "from-file"


def test_logging_options_keep_the_rule(served: dict[str, Any], tmp_path: Path) -> None:
    """``--log-level`` before ``run`` is on the command line: it wins over the environment."""
    invoke(["--log-level", "DEBUG", "run"], env={"TICKWORK_LOG_LEVEL": "ERROR"})
    assert served["meta"]["tickwork.log_level"] == "DEBUG"
    invoke(["run"], env={"TICKWORK_LOG_LEVEL": "ERROR"})
    assert served["meta"]["tickwork.log_level"] == "ERROR"
    invoke(["run", "--log-level", "WARNING"], env={"TICKWORK_LOG_LEVEL": "ERROR"})
    assert served["meta"]["tickwork.log_level"] == "WARNING"


def test_repeatable_options(served: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "cfgtasks.py").write_text(
        "import tickwork\n"
        "class A(tickwork.Task):\n    name = 'a'\n"
        "class B(tickwork.Task):\n    name = 'b'\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        lone = write(tmp_path / "lone.toml", 'tasks = "cfgtasks:A"\n')
        invoke(["run", "--config", str(lone)])
        assert sorted(t.name for t in served["tasks"]) == sorted({"a", *BUILTIN})
        listed = write(tmp_path / "list.toml", 'tasks = ["cfgtasks:A", "cfgtasks:B"]\n')
        invoke(["run", "--config", str(listed)])
        assert sorted(t.name for t in served["tasks"]) == sorted({"a", "b", *BUILTIN})
        invoke(["run", "--config", str(listed)], env={"TICKWORK_TASKS": "cfgtasks:B"})
        assert sorted(t.name for t in served["tasks"]) == sorted({"b", *BUILTIN})
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("cfgtasks", None)


def test_handoff_table_fills_the_settings(
    served: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: list[HandoffSettings] = []

    def builtin(settings: HandoffSettings) -> list[Task]:
        given.append(settings)
        return builtin_tasks(settings)

    monkeypatch.setattr(tickwork.cli._run, "builtin_tasks", builtin)
    secret = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
    config = write(
        tmp_path / "tickwork.toml",
        f'[handoff]\nwebhook-secret = "{secret}"\nredis-url = "redis://file:6379"\n',
    )
    monkeypatch.setenv("TICKWORK_REDIS_URL", "redis://env:6379")
    invoke(["run", "--config", str(config)])
    assert given[-1].webhook_secret == secret
    assert given[-1].redis_url == "redis://env:6379"  # the environment wins
    assert given[-1].nats_url == HandoffSettings().nats_url  # in neither: the default
    (webhook,) = (t for t in served["tasks"] if isinstance(t, WebhookTask))
    assert webhook.signed
    # the file's secret stays out of the environment that bash commands inherit
    assert "TICKWORK_WEBHOOK_SECRET" not in os.environ


def test_the_example_config_is_accepted(served: dict[str, Any]) -> None:
    """deploy/tickwork.toml, its tasks given on the command line (which wins)."""
    example = Path(__file__).parent.parent / "deploy" / "tickwork.toml"
    invoke(["run", "--config", str(example), "--tasks", "tickwork:BashTask"])
    assert served["db"] == Path("/var/lib/tickwork/tickwork.db")
    assert served["retention"] == timedelta(days=30)


def test_user_call_retry_reaches_serve(served: dict[str, Any], tmp_path: Path) -> None:
    invoke(["run"])
    assert served["user_call_retry"] == timedelta(0)  # the default: a user call fails at once
    invoke(["run", "--user-call-retry", "10s"])
    assert served["user_call_retry"] == timedelta(seconds=10)
    invoke(["run", "--user-call-retry", "0"])
    assert served["user_call_retry"] == timedelta(0)
    config = write(tmp_path / "tickwork.toml", 'user-call-retry = "2.5s"\n')
    invoke(["run", "--config", str(config)])
    assert served["user_call_retry"] == timedelta(seconds=2.5)
    invoke(["run", "--config", str(config)], env={"TICKWORK_USER_CALL_RETRY": "1m"})
    assert served["user_call_retry"] == timedelta(minutes=1)


def test_a_number_in_the_config_file_is_parsed_as_on_the_command_line(
    served: dict[str, Any], tmp_path: Path
) -> None:
    """``shutdown-grace = 30`` is 30 seconds (the docs say a number in the file is
    seconds): it once reached the node as the int 30, not converted at all."""
    config = write(
        tmp_path / "tickwork.toml",
        "shutdown-grace = 30\nuser-call-retry = 2.5\nmax-params = 4096\n",
    )
    invoke(["run", "--config", str(config)])
    assert served["shutdown_grace"] == timedelta(seconds=30)
    assert served["user_call_retry"] == timedelta(seconds=2.5)
    assert served["max_params_bytes"] == 4096


def test_a_boolean_or_bad_number_in_the_config_file_is_refused(tmp_path: Path) -> None:
    config = write(tmp_path / "tickwork.toml", "shutdown-grace = true\n")
    line = run_refused(tmp_path, "--config", str(config))
    assert "Invalid value for '--shutdown-grace': expected a duration, got true" in line, line
    assert "key 'shutdown-grace'" in line, line
    config = write(tmp_path / "tickwork.toml", "max-params = 1.5\n")
    line = run_refused(tmp_path, "--config", str(config))
    assert "invalid size '1.5'" in line, line


async def test_serve_gives_user_call_retry_to_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_serve`` opens the node with the value: its settings hold it. The node is stopped
    as ``tickwork run`` is, by a SIGTERM its signal receiver takes."""
    real = tickwork.cli._run.open_scheduler
    seen: list[float] = []

    @asynccontextmanager
    async def recording(store: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with real(store, **kwargs) as scheduler:
            seen.append(scheduler._node.settings.user_call_retry)
            signal.raise_signal(signal.SIGTERM)
            yield scheduler

    monkeypatch.setattr(tickwork.cli._run, "open_scheduler", recording)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    with trio.fail_after(20):
        code = await tickwork.cli._run._serve(
            tmp_path / "t.db",
            [],
            window=timedelta(hours=1),
            max_concurrency=10,
            max_in_memory=10,
            shutdown_grace=timedelta(0),
            user_call_retry=timedelta(seconds=7),
            node_id="retry",
            http=None,
        )
    assert code == 0
    assert seen == [7.0]


def test_new_options_are_covered_without_more_code() -> None:
    @click.command(cls=ConfiguredCommand)
    @click.option("--http-token-file", default=None)
    def cmd(http_token_file: str | None) -> None:
        click.echo(f"token file: {http_token_file}")

    (option,) = (p for p in cmd.params if p.name == "http_token_file")
    assert env_name(option) == "TICKWORK_HTTP_TOKEN_FILE"
    assert file_key(option) == "http-token-file"
    result = CliRunner().invoke(cmd, [], env={"TICKWORK_HTTP_TOKEN_FILE": "/run/t"})
    assert result.output == "token file: /run/t\n"


def test_every_option_is_documented() -> None:
    """docs/operations.md names each option's variable and key (new options too)."""
    text = DOCS.read_text()
    for param in tickwork.cli._run.run.params:
        if isinstance(param, click.Option):
            assert f"`{param.envvar}`" in text, param.envvar
            if param.name != "config":
                assert f"`{file_key(param)}`" in text, file_key(param)
    for key, var in HANDOFF_SETTINGS.items():
        assert f"`{key}`" in text
        assert f"`{var}`" in text


# -- refusals: one clear line, exit 2, nothing started ----------------------------------


def run_refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    full_env.update(env or {})
    db = tmp_path / "never.db"
    proc = subprocess.run(
        [sys.executable, "-m", "tickwork", "run", "--db", str(db), *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=full_env,
        check=False,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert not db.exists()
    return error_line(proc)


def test_refusals_name_where_the_value_came_from(tmp_path: Path) -> None:
    line = run_refused(tmp_path, env={"TICKWORK_WINDOW": "soon"})
    assert "Invalid value for '--window': invalid duration 'soon'" in line
    assert "(from $TICKWORK_WINDOW)" in line

    config = write(tmp_path / "bad-value.toml", 'max-concurrency = "many"\n')
    line = run_refused(tmp_path, "--config", str(config))
    assert "Invalid value for '--max-concurrency'" in line
    assert f"(from config file {config}, key 'max-concurrency')" in line

    config = write(tmp_path / "bad-task.toml", 'tasks = ["os:sep"]\n')
    line = run_refused(tmp_path, env={"TICKWORK_CONFIG": str(config)})
    assert "not a tickwork.Task instance" in line
    assert f"(from config file {config}, key 'tasks')" in line

    config = write(tmp_path / "typo.toml", 'windw = "1h"\n')
    line = run_refused(tmp_path, "--config", str(config))
    assert re.search(rf"config file {re.escape(str(config))}: unknown key 'windw' \(known: ", line)

    config = write(tmp_path / "handoff.toml", '[handoff]\nredis = "redis://x"\n')
    line = run_refused(tmp_path, "--config", str(config))
    assert "unknown key 'redis' in [handoff] (known: webhook-secret, redis-url" in line

    config = write(tmp_path / "broken.toml", "window = \n")
    line = run_refused(tmp_path, "--config", str(config))
    assert f"config file {config} is not valid TOML" in line

    line = run_refused(tmp_path, env={"TICKWORK_CONFIG": str(tmp_path / "missing.toml")})
    assert "cannot read config file" in line
    assert "(from $TICKWORK_CONFIG): No such file or directory" in line


def test_a_bad_user_call_retry_is_refused(tmp_path: Path) -> None:
    line = run_refused(tmp_path, "--user-call-retry=-5")
    assert "Invalid value for '--user-call-retry'" in line, line
    assert "invalid duration '-5'" in line, line
    line = run_refused(tmp_path, env={"TICKWORK_USER_CALL_RETRY": "soon"})
    assert "Invalid value for '--user-call-retry': invalid duration 'soon'" in line, line
    assert "(from $TICKWORK_USER_CALL_RETRY)" in line, line


def test_a_node_starts_from_environment_and_file(tmp_path: Path) -> None:
    """End to end: the node's id from the file, its database from the environment."""
    config = write(tmp_path / "tickwork.toml", 'node-id = "configured"\nwindow = "10m"\n')
    db = tmp_path / "env.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKWORK_")}
    env |= {"TICKWORK_CONFIG": str(config), "TICKWORK_DB": str(db)}
    with Node(None, cwd=tmp_path, env=env) as node:
        node.wait_for(f"node configured started on {db}")
        assert node.stop(signal.SIGTERM) == 0
