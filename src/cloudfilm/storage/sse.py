"""S3 server-side encryption: asked for on every write, proven at start.

A bucket's default encryption is a setting someone can change, and some S3-compatible stores
accept the ``x-amz-server-side-encryption`` header and ignore it. So the archive names the
encryption on each write itself (``S3BlobStore.write_args``: ``put_object`` and any
``create_multipart_upload`` / ``copy_object`` a caller makes) and, at start, writes a probe
object the same way and reads back what the store says it did; when the store does not
report the encryption asked for, the archive refuses to start rather than store images in
the clear while the settings say otherwise.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from cloudfilm.config import Settings

if TYPE_CHECKING:
    from cloudfilm.storage.blobs import S3BlobStore

log = logging.getLogger(__name__)

PROBE_KEY = ".cloudfilm/sse-probe"


class SSENotHonoured(RuntimeError):
    """The S3 store did not apply the server-side encryption the settings ask for."""


def sse_write_args(settings: Settings) -> dict[str, str]:
    """The boto3 arguments every write carries (empty: no server-side encryption asked)."""
    mode = settings.s3_sse
    if mode == "none":
        if settings.s3_sse_kms_key_id:
            raise SSENotHonoured("CLOUDFILM_S3_SSE_KMS_KEY_ID is set but CLOUDFILM_S3_SSE is none")
        return {}
    if mode == "AES256":
        if settings.s3_sse_kms_key_id:
            raise SSENotHonoured("CLOUDFILM_S3_SSE_KMS_KEY_ID needs CLOUDFILM_S3_SSE=aws:kms")
        return {"ServerSideEncryption": "AES256"}
    args = {"ServerSideEncryption": "aws:kms"}
    if settings.s3_sse_kms_key_id:
        args["SSEKMSKeyId"] = settings.s3_sse_kms_key_id
    return args


def _same_kms_key(asked: str, got: str | None) -> bool:
    """AWS answers with the key's ARN whether it was asked by id, ARN or alias: an id or ARN
    must match its tail; an alias cannot be compared without KMS (accepted, logged)."""
    if got is None:
        return False
    if asked.startswith("alias/") or ":alias/" in asked:
        log.info("S3 SSE-KMS key asked by alias %s; the store used %s", asked, got)
        return True
    return got == asked or got.endswith("/" + asked.rsplit("/", 1)[-1])


def check_sse(store: S3BlobStore) -> None:
    """Write the probe object with the store's write arguments and check the store's answer
    (raises :class:`SSENotHonoured` with what it said)."""
    from botocore.exceptions import ClientError

    asked = store.write_args
    if not asked:
        return
    where = f"s3://{store.bucket}/{store.prefix}"
    key = store.prefix + PROBE_KEY
    try:
        store.client.put_object(
            Bucket=store.bucket, Key=key, Body=b"cloudfilm server-side encryption probe", **asked
        )
        head = store.client.head_object(Bucket=store.bucket, Key=key)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise SSENotHonoured(
            f"{where} refused a write with server-side encryption "
            f"{asked['ServerSideEncryption']}: {err.get('Code')} {err.get('Message', '')}".strip()
        ) from exc
    got = head.get("ServerSideEncryption")
    if got != asked["ServerSideEncryption"]:
        raise SSENotHonoured(
            f"{where} did not apply server-side encryption {asked['ServerSideEncryption']} "
            f"(it reports {got or 'none'}): refusing to start. Enable it on the store (MinIO: "
            "a KMS; OSS/Ceph: SSE support) or set CLOUDFILM_S3_SSE=none knowingly."
        )
    kms = asked.get("SSEKMSKeyId")
    if kms and not _same_kms_key(kms, head.get("SSEKMSKeyId")):
        raise SSENotHonoured(
            f"{where} encrypted with KMS key {head.get('SSEKMSKeyId') or 'unknown'}, not the "
            f"configured {kms}: refusing to start"
        )
    store.client.delete_object(Bucket=store.bucket, Key=key)
