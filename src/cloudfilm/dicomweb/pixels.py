"""Frames and whole instances in the syntax a client asked for, decoding only when needed.

Fast paths, in order: native little-endian frames are cut from the stored file by byte range
(one ``pread`` per frame, nothing parsed); compressed frames asked for as stored are taken from
the encapsulated value (parsed once per file, kept in an LRU); only a different syntax costs a
transcode, done once per instance and kept on disk as a derived file.
"""

from __future__ import annotations

from pathlib import Path

from cloudfilm.archive import Archive
from cloudfilm.dicomweb.resources import InstanceRef, read_blob, read_range
from cloudfilm.http.problems import Problem
from cloudfilm.imaging.transcode import (
    BYTE_RANGE_OK,
    ELE,
    NATIVE,
    FrameCache,
    PixelGeometry,
    TranscodeError,
    frames_from_file,
)
from cloudfilm.storage.derived import transcode_cache


class PixelService:
    def __init__(self, archive: Archive, cache_dir: Path | None = None) -> None:
        self.archive = archive
        self.transcoded = transcode_cache(archive.settings, cache_dir)  # encrypted with a KEK
        self.frame_cache = FrameCache()

    # -- whole instances -------------------------------------------------------------------
    def instance_bytes(self, ref: InstanceRef, target_ts: str) -> bytes:
        """The instance as Part-10 bytes in ``target_ts`` (the original when it matches)."""
        if target_ts == ref.transfer_syntax_uid:
            return read_blob(self.archive, ref)
        try:
            return self.transcoded.get_or_make(
                ref.sha256, target_ts, None, lambda: read_blob(self.archive, ref)
            )
        except TranscodeError as exc:
            raise Problem(406, str(exc)) from exc

    # -- frames ----------------------------------------------------------------------------
    def check_frames(self, ref: InstanceRef, numbers: list[int]) -> None:
        if ref.rows is None or ref.columns is None:
            raise Problem(404, f"instance {ref.sop_uid} has no pixel data")
        bad = [n for n in numbers if n > ref.frames]
        if bad:
            raise Problem(404, f"frame(s) {bad} not in instance ({ref.frames} frame(s))")

    def _geometry(self, ref: InstanceRef) -> PixelGeometry | None:
        spp = ref.meta_value("00280002", 1)
        bits = ref.meta_value("00280100")
        if not bits or ref.rows is None or ref.columns is None:
            return None
        return PixelGeometry(ref.rows, ref.columns, int(spp), int(bits), ref.frames)

    def frames(self, ref: InstanceRef, numbers: list[int], target_ts: str) -> list[bytes]:
        """Frames (1-based ``numbers``) in ``target_ts``; ``ELE`` means native little endian."""
        stored = ref.transfer_syntax_uid
        if (
            target_ts == ELE
            and stored in BYTE_RANGE_OK
            and ref.pixel_data_offset is not None
            and ref.meta_json is not None
        ):
            geometry = self._geometry(ref)
            if geometry is not None and geometry.frame_range(0) is not None:
                out = []
                for n in numbers:
                    start, length = geometry.frame_range(n - 1)  # type: ignore[misc]
                    if start + length > (ref.pixel_data_length or 0):
                        raise Problem(404, f"frame {n} is beyond the stored pixel data")
                    out.append(read_range(self.archive, ref, ref.pixel_data_offset + start, length))
                return out
        source_ts = (
            stored
            if (target_ts == stored or (target_ts == ELE and stored in NATIVE))
            else target_ts
        )
        key = (ref.sha256, source_ts)
        cached = self.frame_cache.get(key)
        if cached is None:
            if source_ts == stored:
                data = read_blob(self.archive, ref)
            else:
                data = self.instance_bytes(ref, source_ts)
            try:
                cached = frames_from_file(data)
            except TranscodeError as exc:
                raise Problem(404, str(exc)) from exc
            except Exception as exc:  # a damaged encapsulation in a stored file
                raise Problem(422, f"cannot read the frames of this instance: {exc}") from exc
            self.frame_cache.put(key, cached)
        _, all_frames = cached
        try:
            return [all_frames[n - 1] for n in numbers]
        except IndexError:
            raise Problem(404, "frame number beyond the encoded frames") from None


def parse_frame_list(text: str) -> list[int]:
    """``1,3,5`` → [1, 3, 5]; 400 for anything that is not a list of positive integers."""
    try:
        numbers = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise Problem(400, f"invalid frame list {text!r}: expected 1-based integers") from None
    if not numbers or any(n < 1 for n in numbers):
        raise Problem(400, f"invalid frame list {text!r}: frame numbers start at 1")
    if len(numbers) > 10000:
        raise Problem(400, "too many frames in one request")
    return numbers
