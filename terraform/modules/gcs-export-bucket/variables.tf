variable "project_id" {
  type        = string
  description = "Project that owns the bucket and the trainer's custom IAM role."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 lowercase letters, digits or hyphens)."
  }
}

variable "bucket_name" {
  type        = string
  description = "Globally unique bucket name."

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", var.bucket_name)) && !startswith(var.bucket_name, "goog")
    error_message = "bucket_name must be 3-63 lowercase letters, digits, '-', '_' or '.', start and end alphanumeric, and not start with \"goog\"."
  }
}

variable "location" {
  type        = string
  description = "Bucket location: a region (e.g. \"us-central1\", same as the training jobs) or a multi-region (\"US\")."

  validation {
    condition     = can(regex("^[A-Za-z0-9-]+$", var.location))
    error_message = "location must be a region or multi-region name."
  }
}

variable "export_prefixes" {
  type        = list(string)
  description = "Object-name prefix of every export base in the bucket, e.g. [\"models/ranker\"] for gs://BUCKET/models/ranker. Lifecycle rules and IAM conditions are built per prefix, so every base must be listed."

  validation {
    condition = length(var.export_prefixes) > 0 && alltrue([
      for p in var.export_prefixes : can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", p)) && length(p) <= 200
    ])
    error_message = "export_prefixes must be non-empty; each prefix is 1-200 characters of [A-Za-z0-9._=-] segments joined by single '/', with no leading or trailing '/'."
  }
}

variable "staging_expiration_days" {
  type        = number
  description = "Days after which objects under <prefix>/.cloud-exporter-staging/ are deleted: the safety net for crashed publishes. Must exceed the longest publish."
  default     = 7

  validation {
    condition     = var.staging_expiration_days > 0 && floor(var.staging_expiration_days) == var.staging_expiration_days
    error_message = "staging_expiration_days must be a whole number greater than 0."
  }
}

variable "versioning_enabled" {
  type        = bool
  description = "Keep noncurrent object versions (recovery from accidental deletes or overwrites)."
  default     = true
}

variable "noncurrent_version_expiration_days" {
  type        = number
  description = "When versioning is on, days after which noncurrent versions are deleted."
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days > 0 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number greater than 0."
  }
}

variable "kms_key_name" {
  type        = string
  description = "Optional Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K) used as the bucket's default CMEK; null keeps Google-managed encryption."
  default     = null

  validation {
    condition     = var.kms_key_name == null || can(regex("^projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+$", var.kms_key_name))
    error_message = "kms_key_name must be null or projects/P/locations/L/keyRings/R/cryptoKeys/K."
  }
}

variable "grant_kms_to_storage_agent" {
  type        = bool
  description = "With kms_key_name set, grant the project's Cloud Storage service agent encrypt/decrypt on the key (needs permission to set the key's IAM policy). Set false if the key's owners grant it."
  default     = true
}

variable "log_bucket" {
  type        = string
  description = "Optional bucket that receives usage and storage logs for this bucket; null disables access logging."
  default     = null

  validation {
    condition     = var.log_bucket == null || can(regex("^[a-z0-9][a-z0-9_.-]{1,61}[a-z0-9]$", var.log_bucket))
    error_message = "log_bucket must be null or a bucket name."
  }
}

variable "log_object_prefix" {
  type        = string
  description = "Object prefix of the access logs in log_bucket; null uses the bucket name."
  default     = null
}

variable "trainer_service_accounts" {
  type        = list(string)
  description = "Emails of the service accounts that publish exports (create, read, list, delete objects under the export prefixes only)."
  default     = []

  validation {
    condition     = alltrue([for e in var.trainer_service_accounts : can(regex("^[^@\\s]+@[^@\\s]+$", e))])
    error_message = "trainer_service_accounts must hold service account emails."
  }
}

variable "serving_service_accounts" {
  type        = list(string)
  description = "Emails of the service accounts that read exports (get and list under the export prefixes only)."
  default     = []

  validation {
    condition     = alltrue([for e in var.serving_service_accounts : can(regex("^[^@\\s]+@[^@\\s]+$", e))])
    error_message = "serving_service_accounts must hold service account emails."
  }
}

variable "trainer_role_id" {
  type        = string
  description = "ID of the project-level custom role created for the trainer; null derives a per-bucket ID (cloudExporterTrainer_<hash of bucket name>)."
  default     = null

  validation {
    condition     = var.trainer_role_id == null || can(regex("^[a-zA-Z0-9_.]{3,64}$", var.trainer_role_id))
    error_message = "trainer_role_id must be 3-64 letters, digits, '_' or '.'."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels set on the bucket."
  default     = {}
}

variable "force_destroy" {
  type        = bool
  description = "Allow terraform destroy to delete a bucket that still holds objects. Keep false for buckets that hold served models."
  default     = false
}
