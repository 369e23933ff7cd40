"""The ``bgdownload`` command (docs/api.md §8).

Exit status: 0 success, 1 a job failed (or any other error), 2 a usage error,
130 interrupted. Every error is one line on stderr; no tracebacks.

The client, the server, the local stack and rich are imported by the commands
that use them, so ``bgdownload --help`` (and ``worker``, ``serve``) do not pay
for the others.

    bgdownload up                          # Redis + worker + API in the background
    bgdownload get https://example.org/x.iso -o x.iso --sha256 <hex>
    bgdownload get URL --detach            # prints the job id at once
    bgdownload attach <id>                 # live progress of a running job
    bgdownload ls --state active,waiting
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import click

from bgdownload.config import Settings
from bgdownload.errors import BgdownloadError, InvalidRequest
from bgdownload.models import JobState, parse_states

if TYPE_CHECKING:
    from bgdownload.client import Client, Job

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_CONTEXT = {"help_option_names": ["-h", "--help"]}


def _version() -> str:
    try:
        return version("bgdownload")
    except PackageNotFoundError:  # running from a source checkout that is not installed
        return "unknown (not installed)"


def _settings() -> Settings:
    return Settings.from_env()


def _client() -> Client:
    from bgdownload.client import Client

    return Client()


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _echo_err(message: str) -> None:
    click.echo(f"bgdownload: {_one_line(message)}", err=True)


def _file_location(job: Job) -> str:
    """The finished file: absolute for the local stack, else relative to the server's root."""
    if not job.path:
        return ""
    settings = _settings()
    if settings.api_url is None:
        from bgdownload import local

        info = local.runtime_info(settings)
        if info and info.get("download_dir"):
            return str(Path(info["download_dir"]) / job.path)
    return str(job.path)


def _follow(job: Job) -> Job:
    """Follow ``job`` to its end, with a bar on stderr when that is a terminal.

    The bar goes to stderr (like curl's) so stdout carries only the result and
    ``path=$(bgdownload get URL)`` works while the user still sees progress.
    """
    from bgdownload.client.terminal import TerminalBar

    bar = TerminalBar.for_stdout(job.info, sys.stderr)
    try:
        for _ in job.events():
            if bar is not None:
                bar.update(job.info)
        job.refresh()
    finally:
        if bar is not None:
            bar.close(job.info)
    return job


def _finish(job: Job) -> int:
    """Follow ``job``, print where its file is; the exit status."""
    try:
        final = _follow(job)
    except KeyboardInterrupt:
        _echo_err(f"interrupted; job {job.id} goes on in the background "
                  f"(bgdownload attach {job.id})")
        return EXIT_INTERRUPTED
    if final.state is not JobState.COMPLETED:
        _echo_err(f"job {final.id} {_failure(final)}")
        return EXIT_FAILED
    click.echo(_file_location(final) or final.id)
    return 0


def _failure(job: Job) -> str:
    """``failed: http_error: source answered HTTP 404``."""
    if job.error is not None:
        return f"{job.state.value}: {job.error.code}: {job.error.message}"
    return job.state.value


def _parse_states(text: str | None) -> set[JobState] | None:
    try:
        return parse_states(text)
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message, param_hint="--state") from None


# ------------------------------------------------------------------------ commands


@click.group(context_settings=_CONTEXT)
@click.version_option(version=_version(), prog_name="bgdownload")
def cli() -> None:
    """Download files in the background with live progress."""


@cli.command()
def up() -> int:
    """Start the local stack in the background (Redis, a worker, the API); print the API URL.

    The web page's link goes to stderr: it carries the stack's token in its
    fragment, which the browser keeps to itself (the page stores it and drops it
    from the address bar), so stdout stays the API URL for scripts.
    """
    from bgdownload import local

    settings = _settings()
    info = local.ensure_up(settings)
    if info["started"]:
        logs = settings.state_dir / "logs"
        click.echo(f"started {', '.join(info['started'])}; logs in {logs}", err=True)
    token = local.read_token(settings)
    if token:
        click.echo(f"web page: {info['api_url']}/#token={token}", err=True)
    click.echo(info["api_url"])
    return 0


@cli.command()
def down() -> int:
    """Stop the local stack that `up` started."""
    from bgdownload import local

    stopped = local.down(_settings())
    click.echo(f"stopped {', '.join(stopped)}" if stopped else "nothing was running", err=True)
    return 0


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def status(as_json: bool) -> int:
    """Show what of the local stack runs, where, and its logs."""
    from bgdownload import local

    report = local.status(_settings())
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return 0
    if not report["components"]:
        click.echo(f"not running (state dir {report['state_dir']})")
        return 0
    health = report["health"] or {}
    body = health.get("body") or {}
    if report["running"]:
        headline = f"running at {report['api_url']} ({body.get('workers', '?')} worker(s) seen)"
    else:
        headline = f"not healthy: /healthz answered {health.get('status') or 'nothing'}"
    click.echo(headline)
    for name, comp in report["components"].items():
        pid = f"pid {comp['pid']}" if comp["pid"] else "-"
        log = f"log {comp['log']}" if comp["log"] else ""
        where = comp["where"] or ""
        click.echo(f"  {name:<7} {comp['state']:<8} {pid:<11} {where}  {log}".rstrip())
    click.echo(f"  downloads in {report['download_dir']}")
    return 0


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8765, show_default=True)
@click.option("--insecure", is_flag=True,
              help="Allow a non-loopback address without tokens (anyone can use it).")
def serve(host: str, port: int, insecure: bool) -> int:
    """Run the API server in the foreground."""
    from bgdownload.server.serve import serve as run_server

    run_server(_settings(), host, port, insecure)
    return 0


@cli.command()
@click.option("--concurrency", type=click.IntRange(1, 100_000), default=None,
              help="Downloads at once per worker process [default: BGDOWNLOAD_CONCURRENCY or 8].")
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Worker processes (taskiq's --workers).")
def worker(concurrency: int | None, processes: int) -> int:
    """Run a worker in the foreground: `taskiq worker bgdownload.worker:broker`."""
    import importlib.util
    import os

    settings = _settings()
    if concurrency is not None:
        # the task reads Settings too: keep both views of the limit the same
        os.environ["BGDOWNLOAD_CONCURRENCY"] = str(concurrency)
    if importlib.util.find_spec("bgdownload.worker") is None:
        raise BgdownloadError("bgdownload.worker is missing from this installation")
    from bgdownload.worker.launch import run_workers

    return run_workers(processes=processes, max_async_tasks=concurrency or settings.concurrency)


@cli.command()
@click.argument("url")
@click.option("-o", "--output", "filename", metavar="NAME", help="File name in the download root.")
@click.option("--sha256", metavar="HEX", help="Expected SHA-256; a mismatch fails the job.")
@click.option("--detach", is_flag=True, help="Print the job id and return at once.")
def get(url: str, filename: str | None, sha256: str | None, detach: bool) -> int:
    """Download URL; shows a progress bar until done."""
    if sha256 is not None and (len(sha256) != 64 or not all(c in "0123456789abcdefABCDEF"
                                                              for c in sha256)):
        raise click.BadParameter("expected 64 hex digits", param_hint="--sha256")
    job = _client().download(url, filename=filename, sha256=sha256.lower() if sha256 else None)
    if detach:
        click.echo(job.id)
        return 0
    return _finish(job)


@cli.command(name="ls")
@click.option("--state", metavar="S[,S…]",
              help="Only jobs in these states (comma-separated): waiting, active, paused, "
                   "completed, failed, cancelled.")
def ls(state: str | None) -> int:
    """List your jobs, newest first."""
    states = _parse_states(state)
    jobs = _client().jobs(state=[s.value for s in states] if states else None)
    for job in jobs:
        percent = job.progress.percent
        share = f"{percent:5.1f}%" if percent is not None else "    ?%"
        name = job.filename or job.url or ""
        click.echo(f"{job.id}  {job.state.value:<9} {share}  {name}")
    return 0


@cli.command()
@click.argument("job_id", metavar="ID")
def attach(job_id: str) -> int:
    """Show live progress of a job until it ends."""
    return _finish(_client().get(job_id))


def _control(action: str, job_id: str) -> int:
    job = getattr(_client(), action)(job_id)
    click.echo(f"{job.id} {job.state.value}")
    return 0


@cli.command()
@click.argument("job_id", metavar="ID")
def cancel(job_id: str) -> int:
    """Cancel a job and delete its partial file."""
    return _control("cancel", job_id)


@cli.command()
@click.argument("job_id", metavar="ID")
def pause(job_id: str) -> int:
    """Pause a job, keeping its partial file."""
    return _control("pause", job_id)


@cli.command()
@click.argument("job_id", metavar="ID")
def resume(job_id: str) -> int:
    """Queue a paused job again."""
    return _control("resume", job_id)


# ---------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> None:
    """Console script: run the command and turn every error into one stderr line."""
    try:
        status = cli.main(args=argv, prog_name="bgdownload", standalone_mode=False)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        _echo_err(f"{exc.format_message()}{hint}")
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        _echo_err(exc.format_message())
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        _echo_err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except BgdownloadError as exc:  # ConfigError included
        _echo_err(exc.message or exc.code)
        sys.exit(EXIT_FAILED)
    except OSError as exc:
        _echo_err(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        sys.exit(EXIT_FAILED)
    sys.exit(status if isinstance(status, int) else 0)
