"""The API side of the queue: the message shape workers consume, and no broker from the env."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from taskiq import BrokerMessage

from bgdownload import keys
from bgdownload.config import Settings
from bgdownload.worker.delivery import TASK_NAME, make_broker
from bgdownload.worker.sender import QueueSender

ROOT = Path(__file__).resolve().parents[2]


def sender() -> tuple[QueueSender, list[BrokerMessage]]:
    # nothing connects: sending is captured at the broker's kick
    broker = make_broker(Settings(redis_url="redis://127.0.0.1:1/0"))
    kicked: list[BrokerMessage] = []

    async def kick(message: BrokerMessage) -> None:
        kicked.append(message)

    broker.kick = kick  # type: ignore[method-assign]
    return QueueSender(broker), kicked


async def test_the_inline_message_is_exactly_what_sending_puts_on_the_stream() -> None:
    queue, kicked = sender()
    assert queue.inline and queue.queue_name == keys.TASK_STREAM
    for job_id, message_id in [("j1", "m1"), ('ü "quoted"', "0123abcd")]:
        await queue.send(job_id, message_id)
        assert kicked[-1].message == queue.message(job_id, message_id)
        assert (kicked[-1].task_id, kicked[-1].task_name) == (message_id, TASK_NAME)


def test_the_message_names_the_task_and_carries_only_the_job_id() -> None:
    queue, _ = sender()
    assert json.loads(queue.message("j1", "m1")) == {
        "task_id": "m1", "task_name": "bgdownload.download", "labels": {},
        "labels_types": {}, "args": ["j1"], "kwargs": {},
    }


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BGDOWNLOAD_")}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True,
        check=False, timeout=60,
    )


def test_importing_the_worker_modules_builds_no_broker() -> None:
    # a malformed setting would fail any import that reads the environment
    result = _python(
        "import sys\n"
        "import bgdownload.worker, bgdownload.worker.sender, bgdownload.worker.runner\n"
        "import bgdownload.worker.delivery, bgdownload.worker.runtime\n"
        "assert 'bgdownload.worker.task' not in sys.modules\n",
        BGDOWNLOAD_CONCURRENCY="not a number",
    )
    assert result.returncode == 0, result.stderr


def test_taskiq_finds_the_broker_the_way_its_cli_does() -> None:
    result = _python(
        "import sys\n"
        "from taskiq.abc.broker import AsyncBroker\n"
        "from taskiq.cli.utils import import_object\n"
        "broker = import_object('bgdownload.worker:broker')\n"
        "assert isinstance(broker, AsyncBroker), broker\n"
        "assert broker.find_task('bgdownload.download') is not None\n"
        "import bgdownload.worker as w\n"
        "assert w.broker is broker and w.download.broker is broker\n",
        BGDOWNLOAD_REDIS_URL="redis://127.0.0.1:1/0",
    )
    assert result.returncode == 0, result.stderr
