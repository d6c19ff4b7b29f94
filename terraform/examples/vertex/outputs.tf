output "trainer_service_account" {
  description = "Email of the service account to run the custom job as (serviceAccount of the job spec)."
  value       = google_service_account.trainer.email
}

output "serving_service_account" {
  description = "Email of the service account to deploy the model's endpoint with."
  value       = google_service_account.serving.email
}

output "base_output_directory" {
  description = "baseOutputDirectory.outputUriPrefix of the custom job spec."
  value       = "gs://${module.export_bucket.bucket_name}/${local.job_prefix}"
}

output "aip_model_dir" {
  description = "AIP_MODEL_DIR that Vertex AI sets in the job (with a trailing slash): the export base the library publishes to."
  value       = "${module.export_bucket.export_base_uris[local.export_prefix]}/"
}

output "model_artifact_uri_pattern" {
  description = "Artifact URI to upload a published version to the Vertex AI Model Registry (replace VERSION with the 10-digit version)."
  value       = "${module.export_bucket.export_base_uris[local.export_prefix]}/VERSION/"
}
