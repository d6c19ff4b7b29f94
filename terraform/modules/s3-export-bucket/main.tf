locals {
  # Must equal cloud_exporter.layout.STAGING_DIRNAME (tests/infra/test_terraform.py checks it).
  staging_dirname = ".cloud-exporter-staging"

  # "<prefix>/.cloud-exporter-staging/" for each export base: what crashed publishes leave behind.
  staging_prefixes = [for p in var.export_prefixes : "${p}/${local.staging_dirname}/"]
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:Access logging is opt-in through var.access_log_bucket, because the log bucket belongs to the caller; aws_s3_bucket_logging below enables it.
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery choice of the caller; exports can be republished from training.
  #checkov:skip=CKV2_AWS_62:Nothing consumes bucket events; readers poll the export base for new versions.
  bucket        = var.bucket_name
  force_destroy = var.force_destroy
  tags          = var.tags
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

# ACLs disabled: the bucket owner owns every object, access is by policy only.
resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = var.versioning_enabled ? "Enabled" : "Suspended"
  }
}

resource "aws_s3_bucket_logging" "this" {
  count         = var.access_log_bucket == null ? 0 : 1
  bucket        = aws_s3_bucket.this.id
  target_bucket = var.access_log_bucket
  target_prefix = coalesce(var.access_log_prefix, "${var.bucket_name}/")
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  # Whole bucket. An interrupted multipart upload keeps its parts (billed, invisible to
  # listings) until aborted; with versioning, old versions and lone delete markers go too.
  rule {
    id     = "abort-multipart-and-expire-noncurrent"
    status = "Enabled"
    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }

    dynamic "noncurrent_version_expiration" {
      for_each = var.versioning_enabled ? [var.noncurrent_version_expiration_days] : []
      content {
        noncurrent_days = noncurrent_version_expiration.value
      }
    }

    dynamic "expiration" {
      for_each = var.versioning_enabled ? [true] : []
      content {
        expired_object_delete_marker = expiration.value
      }
    }
  }

  # Safety net for crashed publishes: anything left under a staging prefix expires.
  dynamic "rule" {
    for_each = local.staging_prefixes
    content {
      id     = "expire-staging:${rule.value}"
      status = "Enabled"
      filter {
        prefix = rule.value
      }
      expiration {
        days = var.staging_expiration_days
      }
      noncurrent_version_expiration {
        noncurrent_days = 1
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}
