variable "region" {
  type        = string
  description = "Region of the SageMaker jobs; the bucket is created there too."
  default     = "us-east-1"
}

variable "bucket_name" {
  type        = string
  description = "Globally unique name of the export bucket."
}

variable "job_name" {
  type        = string
  description = "Short name of the training job; names its roles and its prefixes models/<job_name> and jobs/<job_name>."
  default     = "ranker"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.job_name))
    error_message = "job_name must be 3-32 lowercase letters, digits or hyphens, starting with a letter."
  }
}
