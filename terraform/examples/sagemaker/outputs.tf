output "trainer_role_arn" {
  description = "Execution role of the training job (role of the SageMaker estimator)."
  value       = aws_iam_role.trainer.arn
}

output "serving_role_arn" {
  description = "Execution role of the SageMaker model that serves the exports."
  value       = aws_iam_role.serving.arn
}

output "export_base_uri" {
  description = "Export base the training script passes to the library (s3://BUCKET/models/JOB)."
  value       = module.export_bucket.export_base_uris[local.export_prefix]
}

output "checkpoint_s3_uri" {
  description = "checkpoint_s3_uri of the estimator: SageMaker syncs /opt/ml/checkpoints there."
  value       = "s3://${module.export_bucket.bucket_name}/${local.job_prefix}/checkpoints"
}

output "output_path" {
  description = "output_path of the estimator: SageMaker uploads the tarred SM_MODEL_DIR there."
  value       = "s3://${module.export_bucket.bucket_name}/${local.job_prefix}/output"
}
