"""The operations behind every API surface: validate, scope to owners, create, control, stream."""

from bgdownload.service.operations import Service, Stats

__all__ = ["Service", "Stats"]
