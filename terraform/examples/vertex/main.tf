locals {
  # A custom job run with baseOutputDirectory gs://BUCKET/jobs/JOB gets
  #   AIP_MODEL_DIR=gs://BUCKET/jobs/JOB/model/           <- the export base the library publishes to
  #   AIP_CHECKPOINT_DIR=gs://BUCKET/jobs/JOB/checkpoints/
  #   AIP_TENSORBOARD_LOG_DIR=gs://BUCKET/jobs/JOB/logs/
  job_prefix    = "jobs/${var.job_name}"
  export_prefix = "${local.job_prefix}/model"
}

resource "google_service_account" "trainer" {
  account_id   = "${var.job_name}-trainer"
  display_name = "Vertex AI training job ${var.job_name}"
}

resource "google_service_account" "serving" {
  account_id   = "${var.job_name}-serving"
  display_name = "Vertex AI endpoint serving ${var.job_name}"
}

module "export_bucket" {
  source = "../../modules/gcs-export-bucket"

  project_id               = var.project_id
  bucket_name              = var.bucket_name
  location                 = var.region
  export_prefixes          = [local.export_prefix]
  trainer_service_accounts = [google_service_account.trainer.email]
  serving_service_accounts = [google_service_account.serving.email]
}

# Checkpoints and TensorBoard logs are written by TensorFlow itself, beside model/:
# the same permissions, on those prefixes only.
resource "google_storage_bucket_iam_member" "trainer_job_outputs" {
  bucket = module.export_bucket.bucket_name
  role   = module.export_bucket.trainer_role_id
  member = google_service_account.trainer.member

  condition {
    title       = "vertex-job-outputs"
    description = "Checkpoints and TensorBoard logs of the job."
    expression = join(" || ", flatten([
      for d in ["checkpoints", "logs"] : [
        "resource.name.startsWith('projects/_/buckets/${var.bucket_name}/objects/${local.job_prefix}/${d}/')",
        "api.getAttribute('storage.googleapis.com/objectListPrefix', '').startsWith('${local.job_prefix}/${d}/')",
      ]
    ]))
  }
}
