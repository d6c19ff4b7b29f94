variable "project_id" {
  type        = string
  description = "Project that runs the Vertex AI jobs and owns the bucket."
}

variable "region" {
  type        = string
  description = "Region of the Vertex AI jobs; the bucket is created there too."
  default     = "us-central1"
}

variable "bucket_name" {
  type        = string
  description = "Globally unique name of the export bucket."
}

variable "job_name" {
  type        = string
  description = "Short name of the training job; names its service accounts and its prefix jobs/<job_name>."
  default     = "ranker"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}[a-z0-9]$", var.job_name))
    error_message = "job_name must be 3-22 lowercase letters, digits or hyphens, starting with a letter."
  }
}
