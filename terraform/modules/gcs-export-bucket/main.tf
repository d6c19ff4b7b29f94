locals {
  # Must equal cloud_exporter.layout.STAGING_DIRNAME (tests/infra/test_terraform.py checks it).
  staging_dirname = ".cloud-exporter-staging"

  # "<prefix>/.cloud-exporter-staging/" for each export base: what crashed publishes leave behind.
  staging_prefixes = [for p in var.export_prefixes : "${p}/${local.staging_dirname}/"]

  use_kms   = var.kms_key_name != null
  grant_kms = local.use_kms && var.grant_kms_to_storage_agent
}

data "google_storage_project_service_account" "this" {
  count   = local.grant_kms ? 1 : 0
  project = var.project_id
}

# The bucket's CMEK is used by the Cloud Storage service agent, not by the callers.
resource "google_kms_crypto_key_iam_member" "storage_agent" {
  count         = local.grant_kms ? 1 : 0
  crypto_key_id = var.kms_key_name
  role          = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
  member        = "serviceAccount:${data.google_storage_project_service_account.this[0].email_address}"
}

resource "google_storage_bucket" "this" {
  #checkov:skip=CKV_GCP_62:Access logging is opt-in through var.log_bucket, because the log bucket belongs to the caller (often a central logging project); the dynamic logging block below enables it.
  name                        = var.bucket_name
  project                     = var.project_id
  location                    = var.location
  force_destroy               = var.force_destroy
  labels                      = var.labels
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = var.versioning_enabled
  }

  dynamic "encryption" {
    for_each = local.use_kms ? [var.kms_key_name] : []
    content {
      default_kms_key_name = encryption.value
    }
  }

  dynamic "logging" {
    for_each = var.log_bucket == null ? [] : [var.log_bucket]
    content {
      log_bucket        = logging.value
      log_object_prefix = var.log_object_prefix
    }
  }

  # Safety net for crashed publishes: anything left under a staging prefix is deleted.
  # Age counts from each object's creation, so a publish must finish within this many days.
  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      age            = var.staging_expiration_days
      matches_prefix = local.staging_prefixes
      with_state     = "ANY"
    }
  }

  dynamic "lifecycle_rule" {
    for_each = var.versioning_enabled ? [var.noncurrent_version_expiration_days] : []
    content {
      action {
        type = "Delete"
      }
      condition {
        days_since_noncurrent_time = lifecycle_rule.value
        with_state                 = "ARCHIVED"
      }
    }
  }

  depends_on = [google_kms_crypto_key_iam_member.storage_agent]
}
