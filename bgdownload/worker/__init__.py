"""The only code that knows taskiq: the at-least-once broker, the download task, the job runner.

``taskiq worker bgdownload.worker:broker`` is the worker's entry point.
"""

from bgdownload.worker.task import broker, download, make_broker

__all__ = ["broker", "download", "make_broker"]
