"""S3's DeleteObjects refuses keys one by one in a 200 answer: prune must hear it.

The refusals here are real: a bucket policy on the session's moto server denies deleting
markers, and moto then answers DeleteObjects with a per-key AccessDenied, as S3 does. A
transient per-key code (InternalError), which moto cannot produce, is added to the real
answer by wrapping the client call.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import boto3
import fsspec
import pytest
from savedmodels import fake_saved_model

import cloud_exporter as ce
from cloud_exporter.layout import MARKER_NAME


@pytest.fixture
def source(tmp_path: Path) -> Path:
    return fake_saved_model(tmp_path / "model", seed=4)


@pytest.fixture
def guarded_bucket(s3_endpoint: str):
    """(filesystem, bucket) whose policy denies deleting any export marker."""
    import servers

    options = servers.s3_storage_options(s3_endpoint)
    bucket = f"guarded-{uuid.uuid4().hex[:8]}"
    servers.create_bucket("s3", options, bucket)
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name=servers.S3_REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:DeleteObject",
        "Resource": f"arn:aws:s3:::{bucket}/*{MARKER_NAME}",
    }
    client.put_bucket_policy(
        Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]})
    )
    yield fsspec.filesystem("s3", skip_instance_cache=True, **options), bucket
    client.delete_bucket_policy(Bucket=bucket)


@pytest.mark.parametrize("name", ["plain", "exp [1]*? ü"])  # batch, and one request per key
def test_a_marker_the_store_refuses_to_delete_stops_the_prune_before_its_files(
    guarded_bucket, source, name
):
    fs, bucket = guarded_bucket
    base = f"s3://{bucket}/{name}/exports"
    versions = [ce.publish(source, base, version=v, filesystem=fs).version for v in (1, 2, 3)]
    with pytest.raises(ce.PermissionDeniedError, match=f"1/{MARKER_NAME}"):
        ce.prune(base, keep=1, filesystem=fs)
    for version in versions:  # every export still whole: no marker left over deleted files
        assert ce.verify_export(base, version, deep=True, filesystem=fs).version == version


def test_keys_the_store_puts_off_are_deleted_again(s3_backend, source, monkeypatch, caplog):
    fs = s3_backend.new_fs()
    for v in (1, 2, 3):
        ce.publish(source, s3_backend.base, version=v, filesystem=fs)
    real_call, answered = fs.call_s3, []

    def call_s3(method, *args, **kwargs):
        out = real_call(method, *args, **kwargs)
        if method == "delete_objects" and not answered:
            key = kwargs["Delete"]["Objects"][0]["Key"]
            real_call("put_object", Bucket=kwargs["Bucket"], Key=key, Body=b"still here")
            out = {**out, "Errors": [{"Key": key, "Code": "InternalError", "Message": "later"}]}
            answered.append(key)
        return out

    monkeypatch.setattr(fs, "call_s3", call_s3)
    with caplog.at_level("WARNING", logger="cloud_exporter"):
        report = ce.prune(s3_backend.base, keep=1, filesystem=fs)
    assert report.deleted == [1, 2] and answered
    assert not fs.exists(f"{fs.split_path(s3_backend.base)[0]}/{answered[0]}")
    assert [
        e.version for e in ce.list_exports(s3_backend.base, filesystem=s3_backend.new_fs())
    ] == [3]
    assert any("transient" in r.getMessage() for r in caplog.records)
