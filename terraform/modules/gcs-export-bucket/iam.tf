locals {
  objects_root = "projects/_/buckets/${var.bucket_name}/objects"
  list_prefix  = "api.getAttribute('storage.googleapis.com/objectListPrefix', '')"

  # Object calls (create, get, delete, rewrite) are checked against the object's name;
  # objects.list is checked against the bucket, with the request's prefix as an attribute.
  # Listing "<prefix>" itself is allowed so that probing the base directory works.
  prefix_condition = join(" || ", flatten([
    for p in var.export_prefixes : [
      "resource.name.startsWith('${local.objects_root}/${p}/')",
      "${local.list_prefix} == '${p}'",
      "${local.list_prefix}.startsWith('${p}/')",
    ]
  ]))

  trainer_role_id = coalesce(var.trainer_role_id, "cloudExporterTrainer_${substr(sha1(var.bucket_name), 0, 12)}")
}

# Exactly the permissions the library's gcsfs calls need; see docs/infrastructure.md.
resource "google_project_iam_custom_role" "trainer" {
  count       = length(var.trainer_service_accounts) > 0 ? 1 : 0
  project     = var.project_id
  role_id     = local.trainer_role_id
  title       = "cloud_exporter trainer"
  description = "Publish SavedModels to gs://${var.bucket_name} with cloud_exporter: create, read, list and delete objects."
  permissions = [
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.get",
    "storage.objects.list",
  ]
}

resource "google_storage_bucket_iam_member" "trainer" {
  count  = length(var.trainer_service_accounts)
  bucket = google_storage_bucket.this.name
  role   = google_project_iam_custom_role.trainer[0].id
  member = "serviceAccount:${var.trainer_service_accounts[count.index]}"

  condition {
    title       = "cloud-exporter-export-prefixes"
    description = "Only objects under the export prefixes of this bucket."
    expression  = local.prefix_condition
  }
}

resource "google_storage_bucket_iam_member" "serving" {
  count  = length(var.serving_service_accounts)
  bucket = google_storage_bucket.this.name
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${var.serving_service_accounts[count.index]}"

  condition {
    title       = "cloud-exporter-export-prefixes"
    description = "Only objects under the export prefixes of this bucket."
    expression  = local.prefix_condition
  }
}
