"""Ingest: the single path by which any instance enters the archive."""

from cloudfilm.ingest.errors import Rejected, RejectReason
from cloudfilm.ingest.service import IngestResult, ingest

__all__ = ["IngestResult", "RejectReason", "Rejected", "ingest"]
