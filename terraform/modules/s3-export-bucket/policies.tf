locals {
  object_arns = [for p in var.export_prefixes : "${aws_s3_bucket.this.arn}/${p}/*"]

  # ListObjectsV2 must name a prefix inside an export base. S3 also checks s3:ListBucket, with
  # the key as s3:prefix, when a missing key is read: allowed means 404 (FileNotFoundError in
  # s3fs) instead of 403, which the library's existence checks rely on.
  list_prefixes = [for p in var.export_prefixes : "${p}/*"]
}

# Trainer: exactly the S3 calls the library makes through s3fs (see docs/infrastructure.md).
data "aws_iam_policy_document" "trainer" {
  statement {
    sid    = "ExportObjects"
    effect = "Allow"
    actions = [
      "s3:AbortMultipartUpload",
      "s3:DeleteObject",
      "s3:GetObject",
      "s3:PutObject",
    ]
    resources = local.object_arns
  }

  statement {
    sid       = "ListExportPrefixes"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = local.list_prefixes
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "UseBucketKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

# Serving: read and list only.
data "aws_iam_policy_document" "serving" {
  statement {
    sid       = "ReadExports"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = local.object_arns
  }

  statement {
    sid       = "ListExportPrefixes"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = local.list_prefixes
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptWithBucketKey"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.this.arn, "${aws_s3_bucket.this.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.bucket.json

  # A policy put before the public access block could be judged public and rejected.
  depends_on = [aws_s3_bucket_public_access_block.this]
}
