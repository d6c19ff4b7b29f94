locals {
  # SM_MODEL_DIR (/opt/ml/model) is a local directory that SageMaker tars to output_path after
  # the job; the library publishes to an S3 base instead, passed to the job explicitly.
  export_prefix = "models/${var.job_name}"
  # checkpoint_s3_uri (synced from /opt/ml/checkpoints) and output_path (model.tar.gz) live here.
  job_prefix = "jobs/${var.job_name}"
}

module "export_bucket" {
  source = "../../modules/s3-export-bucket"

  bucket_name     = var.bucket_name
  export_prefixes = [local.export_prefix]
}

data "aws_iam_policy_document" "sagemaker_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "trainer" {
  name               = "${var.job_name}-trainer"
  description        = "SageMaker training job ${var.job_name}: publishes exports with cloud_exporter."
  assume_role_policy = data.aws_iam_policy_document.sagemaker_assume.json
}

resource "aws_iam_role_policy" "trainer_exports" {
  name   = "cloud-exporter-publish"
  role   = aws_iam_role.trainer.id
  policy = module.export_bucket.trainer_policy_json
}

# SageMaker itself syncs checkpoints and uploads model.tar.gz with the job's role.
data "aws_iam_policy_document" "job_outputs" {
  statement {
    sid       = "JobOutputs"
    actions   = ["s3:GetObject", "s3:PutObject"]
    resources = ["${module.export_bucket.bucket_arn}/${local.job_prefix}/*"]
  }

  statement {
    sid       = "ListJobOutputs"
    actions   = ["s3:ListBucket"]
    resources = [module.export_bucket.bucket_arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${local.job_prefix}/*"]
    }
  }
}

resource "aws_iam_role_policy" "trainer_job_outputs" {
  name   = "sagemaker-job-outputs"
  role   = aws_iam_role.trainer.id
  policy = data.aws_iam_policy_document.job_outputs.json
}

resource "aws_iam_role" "serving" {
  name               = "${var.job_name}-serving"
  description        = "SageMaker endpoint serving ${var.job_name}: reads exports."
  assume_role_policy = data.aws_iam_policy_document.sagemaker_assume.json
}

resource "aws_iam_role_policy" "serving_exports" {
  name   = "cloud-exporter-read"
  role   = aws_iam_role.serving.id
  policy = module.export_bucket.serving_policy_json
}
