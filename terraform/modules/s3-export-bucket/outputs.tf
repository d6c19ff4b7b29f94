output "bucket_name" {
  description = "Name of the bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the bucket."
  value       = aws_s3_bucket.this.arn
}

output "export_base_uris" {
  description = "Map of export prefix to its export base URI (s3://BUCKET/PREFIX): the base a training job publishes to."
  value       = { for p in var.export_prefixes : p => "s3://${aws_s3_bucket.this.id}/${p}" }
}

output "staging_prefixes" {
  description = "Key prefixes expired by the staging lifecycle rules."
  value       = local.staging_prefixes
}

output "trainer_policy_json" {
  description = "IAM policy (JSON) for the identity that publishes exports: get, put, delete and abort multipart uploads under the export prefixes, list them, and use the bucket's KMS key if one is set."
  value       = data.aws_iam_policy_document.trainer.json
}

output "serving_policy_json" {
  description = "IAM policy (JSON) for the identity that serves exports: get and list under the export prefixes, and decrypt with the bucket's KMS key if one is set."
  value       = data.aws_iam_policy_document.serving.json
}
