output "bucket_name" {
  description = "Name of the bucket."
  value       = google_storage_bucket.this.name
}

output "bucket_url" {
  description = "gs:// URL of the bucket."
  value       = google_storage_bucket.this.url
}

output "export_base_uris" {
  description = "Map of export prefix to its export base URI (gs://BUCKET/PREFIX): the base a training job publishes to."
  value       = { for p in var.export_prefixes : p => "gs://${google_storage_bucket.this.name}/${p}" }
}

output "staging_prefixes" {
  description = "Object-name prefixes expired by the staging lifecycle rule."
  value       = local.staging_prefixes
}

output "trainer_role_id" {
  description = "Full name (projects/P/roles/ID) of the trainer's custom role, or null when no trainer was given. Reusable for other prefixes of the same job (checkpoints, logs)."
  value       = one(google_project_iam_custom_role.trainer[*].id)
}

output "prefix_condition" {
  description = "IAM condition expression that limits a bucket binding to the export prefixes."
  value       = local.prefix_condition
}
