"""The example notebooks in notebooks/ run clean, headless, against a real stack.

Each notebook runs under nbclient in a real kernel whose environment points the
client at the ``api`` fixture (server process + worker process + Redis) and the
notebook's ``BGDOWNLOAD_EXAMPLE_*`` variables at the local ``source`` server.

nbclient records widget comm messages only while the cell that sent them is
running (JupyterLab takes them whenever they come), so the saved widget state
(``store_widget_state=True`` → ``nb.metadata.widgets``) shows a bar's final
state only if the client sends it before the cell that waits for the job ends.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, cast

import httpx
import nbclient
import nbformat
import pytest

from tests.support.source_server import SourceServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
EXAMPLES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
VIEW = "application/vnd.jupyter.widget-view+json"
STATE = "application/vnd.jupyter.widget-state+json"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def kernel_env(api: str, stack_env: dict[str, str]) -> dict[str, str]:
    """The whole environment of a notebook kernel: the test stack's, plus the API URL."""
    return {**stack_env, "BGDOWNLOAD_URL": api}


def run(name: str, env: dict[str, str], cwd: Path, **example: str) -> nbformat.NotebookNode:
    """Execute ``notebooks/<name>`` in a new kernel (shut down at the end); raise on error."""
    nb = read(name)
    client = nbclient.NotebookClient(
        nb, timeout=60, kernel_name="python3", store_widget_state=True,
        resources={"metadata": {"path": str(cwd)}},
    )
    # start_kernel(env=...) is the kernel process's whole environment
    client.execute(env={**env, **example})
    return nb


def read(name: str) -> nbformat.NotebookNode:
    return cast(nbformat.NotebookNode, nbformat.read(NOTEBOOKS / name, as_version=4))  # type: ignore[no-untyped-call]


def text(cell: nbformat.NotebookNode) -> str:
    """A cell's printed output and plain-text results."""
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        if VIEW not in out.get("data", {}):  # a widget's text/plain is only its repr
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def cell_with(nb: nbformat.NotebookNode, snippet: str) -> nbformat.NotebookNode:
    [cell] = [c for c in nb.cells if c.cell_type == "code" and snippet in c.source]
    return cast(nbformat.NotebookNode, cell)


def views(cell: nbformat.NotebookNode) -> list[str]:
    """Model ids of the widget views the cell displayed."""
    return [o["data"][VIEW]["model_id"] for o in cell.get("outputs", [])
            if o.output_type == "display_data" and VIEW in o.get("data", {})]


def models(nb: nbformat.NotebookNode) -> dict[str, dict[str, Any]]:
    return dict(nb.metadata["widgets"][STATE]["state"])


def bar_of(nb: nbformat.NotebookNode, model_id: str) -> dict[str, Any]:
    """The FloatProgress state inside the job row widget ``model_id``."""
    state = models(nb)
    children = [c.removeprefix("IPY_MODEL_") for c in state[model_id]["state"]["children"]]
    [bar] = [state[c]["state"] for c in children if state[c]["model_name"] == "FloatProgressModel"]
    return cast(dict[str, Any], bar)


def assert_bar_finished(nb: nbformat.NotebookNode, model_id: str) -> None:
    bar = bar_of(nb, model_id)
    assert (bar["value"], bar["bar_style"]) == (bar["max"], "success"), bar


def job_json(api: str, job_id: str) -> dict[str, Any]:
    return cast(dict[str, Any], httpx.get(f"{api}/api/v1/downloads/{job_id}", timeout=10).json())


def test_example_notebooks_are_committed_without_outputs() -> None:
    assert {"quickstart.ipynb", "reattach-1-start.ipynb", "reattach-2-attach.ipynb",
            "many-downloads.ipynb", "controlling-downloads.ipynb"} <= set(EXAMPLES)
    for name in EXAMPLES:
        nb = read(name)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert (cell.outputs, cell.execution_count) == ([], None), name
        assert "widgets" not in nb.metadata, name


def test_quickstart(kernel_env: dict[str, str], source: SourceServer, tmp_path: Path) -> None:
    size = 2_000_000
    nb = run("quickstart.ipynb", kernel_env, tmp_path,
             BGDOWNLOAD_EXAMPLE_URL=source.url(f"/bytes/{size}?seed=q&rate=1000000"),
             BGDOWNLOAD_EXAMPLE_SHA256=source.expected_sha256(size, "q"))
    [view] = views(cell_with(nb, "bgd.download("))
    assert_bar_finished(nb, view)
    done = text(cell_with(nb, "job.wait()"))
    assert "state:  completed" in done
    assert f"sha256: {source.expected_sha256(size, 'q')}" in done
    assert "verified: True" in done


def test_reattach_from_a_new_kernel_after_the_first_one_is_gone(
    api: str, kernel_env: dict[str, str], source: SourceServer, tmp_path: Path
) -> None:
    size = 8_000_000  # about 8 s at this rate: still running when the second kernel is up
    digest = source.expected_sha256(size, "r")
    example = {"BGDOWNLOAD_EXAMPLE_URL": source.url(f"/bytes/{size}?seed=r&rate=1000000"),
               "BGDOWNLOAD_EXAMPLE_SHA256": digest}

    first = run("reattach-1-start.ipynb", kernel_env, tmp_path, **example)
    started = cell_with(first, "bgd.download(")
    match = re.search(rf"job id: ({UUID})", text(started))
    assert match, text(started)
    job_id = match[1]
    assert views(started)
    # nbclient has shut the first kernel down; the download went on without it
    assert job_json(api, job_id)["state"] in ("waiting", "active")

    second = run("reattach-2-attach.ipynb", kernel_env, tmp_path,
                 BGDOWNLOAD_EXAMPLE_JOB_ID=job_id, **example)
    listed = text(cell_with(second, "bgd.attach()"))
    assert re.search(rf"^{job_id} (waiting|active) ", listed, re.M), listed
    [view] = views(cell_with(second, "bgd.attach(JOB_ID)"))
    assert_bar_finished(second, view)
    done = text(cell_with(second, "job.wait()"))
    assert f"sha256: {digest}" in done and "SHA-256 verified" in done
    final = job_json(api, job_id)
    assert (final["state"], final["sha256"]) == ("completed", digest)


def test_many_downloads(
    kernel_env: dict[str, str], source: SourceServer, tmp_path: Path
) -> None:
    sizes = {"m1": 300_000, "m2": 500_000, "m3": 700_000}
    urls = [source.url(f"/bytes/{n}?seed={seed}&rate=500000") for seed, n in sizes.items()]
    digests = [source.expected_sha256(n, seed) for seed, n in sizes.items()]
    nb = run("many-downloads.ipynb", kernel_env, tmp_path,
             BGDOWNLOAD_EXAMPLE_URLS=" ".join(urls))

    assert views(cell_with(nb, "bgd.active()"))
    started = re.findall(rf"^({UUID}) ", text(cell_with(nb, "bgd.download(url)")), re.M)
    assert len(started) == 3
    waited = text(cell_with(nb, "job.wait(progress=False)")).splitlines()
    assert [line.split()[0] for line in waited] == ["completed"] * 3
    assert [line.split()[-1] for line in waited] == digests

    [view] = views(cell_with(nb, "bgd.download(files="))
    assert_bar_finished(nb, view)
    batch = text(cell_with(nb, "batch.wait()")).splitlines()
    assert batch[0] == f"batch completed {sum(sizes.values())} bytes"
    assert [line.split()[0] for line in batch[1:]] == ["completed"] * 3
    assert [line.split()[1] for line in batch[1:]] == [
        f"batch-{i}-{n}" for i, n in enumerate(sizes.values())]
    assert [line.split()[-1] for line in batch[1:]] == digests


def test_controlling_downloads(
    kernel_env: dict[str, str], source: SourceServer, tmp_path: Path
) -> None:
    size = 3_000_000
    nb = run("controlling-downloads.ipynb", kernel_env, tmp_path,
             BGDOWNLOAD_EXAMPLE_URL=source.url(f"/bytes/{size}?seed=c"),
             BGDOWNLOAD_EXAMPLE_MAX_SPEED="1000000",
             BGDOWNLOAD_EXAMPLE_SMALL_URL=source.url("/bytes/1000?seed=s"))

    assert views(cell_with(nb, "max_speed=MAX_SPEED"))
    assert text(cell_with(nb, "job.pause()")).startswith("paused at ")
    assert text(cell_with(nb, "job.resume()")).strip() in ("waiting", "active")
    assert text(cell_with(nb, "job.cancel()")).strip() == "cancelled"
    retried = cell_with(nb, "job.retry()")
    [view] = views(retried)
    assert_bar_finished(nb, view)
    assert text(retried).split()[-1] == source.expected_sha256(size, "c")
    assert text(retried).startswith("completed ")
    assert text(cell_with(nb, "bgd.DownloadFailed")).startswith("failed: checksum_mismatch - ")
