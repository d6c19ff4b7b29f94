variable "bucket_name" {
  type        = string
  description = "Globally unique bucket name."

  validation {
    condition = (
      can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
      && !can(regex("\\.\\.|^\\d+\\.\\d+\\.\\d+\\.\\d+$|^xn--|-s3alias$|--ol-s3$", var.bucket_name))
    )
    error_message = "bucket_name must be 3-63 lowercase letters, digits, '.' or '-', start and end alphanumeric, and not be an IP address or use a reserved prefix or suffix."
  }
}

variable "export_prefixes" {
  type        = list(string)
  description = "Key prefix of every export base in the bucket, e.g. [\"models/ranker\"] for s3://BUCKET/models/ranker. Lifecycle rules and IAM statements are built per prefix, so every base must be listed."

  validation {
    condition = length(var.export_prefixes) > 0 && alltrue([
      for p in var.export_prefixes : can(regex("^[A-Za-z0-9._=-]+(/[A-Za-z0-9._=-]+)*$", p)) && length(p) <= 200
    ])
    error_message = "export_prefixes must be non-empty; each prefix is 1-200 characters of [A-Za-z0-9._=-] segments joined by single '/', with no leading or trailing '/'."
  }
}

variable "staging_expiration_days" {
  type        = number
  description = "Days after which objects under <prefix>/.cloud-exporter-staging/ expire: the safety net for crashed publishes. Must exceed the longest publish."
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
  description = "When versioning is on, days after which noncurrent versions expire."
  default     = 30

  validation {
    condition     = var.noncurrent_version_expiration_days > 0 && floor(var.noncurrent_version_expiration_days) == var.noncurrent_version_expiration_days
    error_message = "noncurrent_version_expiration_days must be a whole number greater than 0."
  }
}

variable "kms_key_arn" {
  type        = string
  description = "Optional customer-managed KMS key ARN for SSE-KMS; null uses the AWS-managed key (aws/s3)."
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be null or a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "access_log_bucket" {
  type        = string
  description = "Optional bucket that receives server access logs for this bucket; null disables access logging."
  default     = null
}

variable "access_log_prefix" {
  type        = string
  description = "Key prefix of the access logs in access_log_bucket; null uses \"<bucket_name>/\"."
  default     = null
}

variable "force_destroy" {
  type        = bool
  description = "Allow terraform destroy to delete a bucket that still holds objects. Keep false for buckets that hold served models."
  default     = false
}

variable "tags" {
  type        = map(string)
  description = "Tags set on the bucket."
  default     = {}
}
