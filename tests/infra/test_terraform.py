"""Offline checks of terraform/ with python-hcl2: no terraform binary, no cloud credentials.

They pin the modules to the library: the staging prefix the lifecycle rules expire is the one
cloud_exporter.layout writes to, and the trainer may make exactly the storage calls the library
makes. checkov (run separately in CI) covers the generic bucket hardening rules.
"""

from __future__ import annotations

import re
from pathlib import Path

import hcl2
import pytest
from hcl2.utils import SerializationOptions

from cloud_exporter.layout import STAGING_DIRNAME, staging_root

REPO = Path(__file__).resolve().parents[2]
TF_ROOT = REPO / "terraform"
GCS = TF_ROOT / "modules" / "gcs-export-bucket"
S3 = TF_ROOT / "modules" / "s3-export-bucket"
MODULES = [GCS, S3]
TF_DIRS = sorted({p.parent for p in TF_ROOT.rglob("*.tf")})
TF_FILES = sorted(TF_ROOT.rglob("*.tf"))

# S3 actions of the trainer, each with the s3fs calls of the library that need it.
S3_TRAINER_ACTIONS = {
    # PutObject (also If-None-Match create-only markers), CreateMultipartUpload, UploadPart,
    # CompleteMultipartUpload; the destination of CopyObject.
    "s3:PutObject",
    # AbortMultipartUpload when a multipart put fails.
    "s3:AbortMultipartUpload",
    # GetObject, HeadObject; the source of CopyObject.
    "s3:GetObject",
    # DeleteObject, DeleteObjects: staging cleanup and removal of old versions.
    "s3:DeleteObject",
    # ListObjectsV2 (with an s3:prefix condition); also makes a missing key answer 404, not 403.
    "s3:ListBucket",
}
# Only with a customer-managed SSE-KMS key: uploads need a data key, reads decrypt it.
S3_TRAINER_KMS_ACTIONS = {"kms:GenerateDataKey", "kms:Decrypt"}
S3_SERVING_ACTIONS = {"s3:GetObject", "s3:ListBucket"}
S3_SERVING_KMS_ACTIONS = {"kms:Decrypt"}

# GCS permissions of the trainer, each with the gcsfs calls of the library that need it.
GCS_TRAINER_PERMISSIONS = {
    # objects insert (uploads; markers with ifGenerationMatch=0); the destination of rewrite.
    "storage.objects.create",
    # objects get (reads, info); the source of rewrite.
    "storage.objects.get",
    # objects list.
    "storage.objects.list",
    # objects delete; GCS also requires it to overwrite an existing object name.
    "storage.objects.delete",
}
GCS_READ_ONLY_ROLES = {"roles/storage.objectViewer"}

_OPTIONS = SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)


def parse(path: Path) -> dict:
    with path.open() as f:
        return hcl2.load(f, serialization_options=_OPTIONS)


def config(directory: Path) -> dict:
    """All top-level blocks of a directory's .tf files, merged by kind."""
    merged: dict = {}
    for path in sorted(directory.glob("*.tf")):
        for kind, entries in parse(path).items():
            merged.setdefault(kind, []).extend(entries)
    return merged


def named(directory: Path, kind: str) -> dict:
    """variable/output blocks: {name: body}."""
    return {name: body for entry in config(directory).get(kind, []) for name, body in entry.items()}


def typed(directory: Path, kind: str) -> dict:
    """resource/data blocks: {(type, name): body}."""
    out = {}
    for entry in config(directory).get(kind, []):
        for rtype, by_name in entry.items():
            for name, body in by_name.items():
                out[(rtype, name)] = body
    return out


def local_values(directory: Path) -> dict:
    return {k: v for entry in config(directory).get("locals", []) for k, v in entry.items()}


def dynamic(body: dict, name: str) -> list[dict]:
    return [d[name] for d in body.get("dynamic", []) if name in d]


def statements(document: dict) -> tuple[list[dict], list[dict]]:
    """(static statements, dynamic statement blocks) of an aws_iam_policy_document."""
    return document.get("statement", []), dynamic(document, "statement")


def render_for_template(expression: str, **values: str) -> str:
    """Render the string template of `[for x in ... : "<template>"]` with the given values."""
    match = re.search(r':\s*"(.*)"\]\}$', expression)
    assert match, f"not a list comprehension of a string template: {expression}"
    rendered = match.group(1)
    for name, value in values.items():
        rendered = rendered.replace("${" + name + "}", value)
    return rendered


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TF_ROOT)))
def test_every_tf_file_parses(path):
    assert parse(path), f"{path} has no blocks"


def test_layout_of_the_tree():
    expected = {
        TF_ROOT / "modules" / "gcs-export-bucket",
        TF_ROOT / "modules" / "s3-export-bucket",
        TF_ROOT / "examples" / "vertex",
        TF_ROOT / "examples" / "sagemaker",
    }
    assert expected <= set(TF_DIRS)
    for directory in TF_DIRS:
        for name in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
            assert (directory / name).is_file(), f"{directory / name} is missing"


# --- staging prefix ------------------------------------------------------------------------


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_staging_dirname_is_the_library_constant(module):
    assert local_values(module)["staging_dirname"] == STAGING_DIRNAME


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_staging_prefixes_render_the_library_staging_root(module):
    template = local_values(module)["staging_prefixes"]
    assert "for p in var.export_prefixes" in template
    for base in ("models/ranker", "team/a/jobs/ranker/model"):
        rendered = render_for_template(
            template, p=base, **{"local.staging_dirname": STAGING_DIRNAME}
        )
        assert rendered == staging_root(base) + "/"


def test_no_stale_copy_of_the_staging_name():
    texts = [p.read_text() for p in TF_ROOT.rglob("*") if p.suffix in (".tf", ".md")]
    texts.append((REPO / "docs" / "infrastructure.md").read_text())
    found = {m for text in texts for m in re.findall(r"\.cloud-exporter-[A-Za-z0-9_-]+", text)}
    assert found == {STAGING_DIRNAME}


def test_gcs_lifecycle_deletes_staging():
    bucket = typed(GCS, "resource")[("google_storage_bucket", "this")]
    rules = [r for r in bucket["lifecycle_rule"] if r["condition"][0].get("matches_prefix")]
    assert len(rules) == 1
    rule = rules[0]
    assert rule["action"][0]["type"] == "Delete"
    assert rule["condition"][0]["matches_prefix"] == "${local.staging_prefixes}"
    assert rule["condition"][0]["age"] == "${var.staging_expiration_days}"


def test_s3_lifecycle_expires_staging():
    lifecycle = typed(S3, "resource")[("aws_s3_bucket_lifecycle_configuration", "this")]
    (rule,) = [
        r for r in dynamic(lifecycle, "rule") if r["for_each"] == "${local.staging_prefixes}"
    ]
    content = rule["content"][0]
    assert content["status"] == "Enabled"
    assert content["filter"][0]["prefix"] == "${rule.value}"
    assert content["expiration"][0]["days"] == "${var.staging_expiration_days}"


def test_s3_abort_multipart_rule_covers_the_whole_bucket():
    lifecycle = typed(S3, "resource")[("aws_s3_bucket_lifecycle_configuration", "this")]
    rules = [r for r in lifecycle.get("rule", []) if "abort_incomplete_multipart_upload" in r]
    assert len(rules) == 1
    rule = rules[0]
    assert rule["status"] == "Enabled"
    assert rule["filter"] == [{}], "an empty filter applies the rule to every key"
    assert rule["abort_incomplete_multipart_upload"][0]["days_after_initiation"] == 1


# --- permissions ---------------------------------------------------------------------------


def _actions(blocks: list[dict]) -> set[str]:
    return {a for b in blocks for a in b["actions"]}


def test_s3_trainer_actions_are_exactly_the_library_calls():
    static, gated = statements(typed(S3, "data")[("aws_iam_policy_document", "trainer")])
    assert _actions(static) == S3_TRAINER_ACTIONS
    assert all(g["for_each"].startswith("${var.kms_key_arn == null ? []") for g in gated)
    assert _actions([c for g in gated for c in g["content"]]) == S3_TRAINER_KMS_ACTIONS


def test_s3_serving_is_read_only():
    static, gated = statements(typed(S3, "data")[("aws_iam_policy_document", "serving")])
    assert _actions(static) == S3_SERVING_ACTIONS
    assert _actions([c for g in gated for c in g["content"]]) == S3_SERVING_KMS_ACTIONS


@pytest.mark.parametrize("document", ["trainer", "serving"])
def test_s3_statements_are_scoped_to_the_export_prefixes(document):
    static, _ = statements(typed(S3, "data")[("aws_iam_policy_document", document)])
    locals_ = local_values(S3)
    for statement in static:
        assert statement["effect"] == "Allow"
        if statement["actions"] == ["s3:ListBucket"]:
            assert statement["resources"] == ["${aws_s3_bucket.this.arn}"]
            (cond,) = statement["condition"]
            assert (cond["test"], cond["variable"]) == ("StringLike", "s3:prefix")
            assert cond["values"] == "${local.list_prefixes}"
            assert (
                render_for_template(locals_["list_prefixes"], p="models/ranker")
                == "models/ranker/*"
            )
        else:
            assert statement["resources"] == "${local.object_arns}"
            arn = render_for_template(locals_["object_arns"], p="models/ranker")
            assert arn == "${aws_s3_bucket.this.arn}/models/ranker/*"


def test_gcs_trainer_permissions_are_exactly_the_library_calls():
    resources = typed(GCS, "resource")
    role = resources[("google_project_iam_custom_role", "trainer")]
    assert set(role["permissions"]) == GCS_TRAINER_PERMISSIONS
    binding = resources[("google_storage_bucket_iam_member", "trainer")]
    assert binding["role"] == "${google_project_iam_custom_role.trainer[0].id}"
    assert binding["condition"][0]["expression"] == "${local.prefix_condition}"


def test_gcs_serving_is_read_only_and_scoped():
    binding = typed(GCS, "resource")[("google_storage_bucket_iam_member", "serving")]
    assert binding["role"] in GCS_READ_ONLY_ROLES
    assert binding["condition"][0]["expression"] == "${local.prefix_condition}"


def test_gcs_condition_limits_objects_and_listing_to_the_prefixes():
    condition = local_values(GCS)["prefix_condition"]
    assert "for p in var.export_prefixes" in condition
    assert "resource.name.startsWith('${local.objects_root}/${p}/')" in condition
    assert "${local.list_prefix}.startsWith('${p}/')" in condition
    locals_ = local_values(GCS)
    assert locals_["objects_root"] == "projects/_/buckets/${var.bucket_name}/objects"
    assert (
        locals_["list_prefix"] == "api.getAttribute('storage.googleapis.com/objectListPrefix', '')"
    )


# --- public access -------------------------------------------------------------------------


def test_gcs_public_access_is_prevented():
    bucket = typed(GCS, "resource")[("google_storage_bucket", "this")]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"


def test_s3_public_access_is_blocked():
    resources = typed(S3, "resource")
    block = resources[("aws_s3_bucket_public_access_block", "this")]
    assert block["bucket"] == "${aws_s3_bucket.this.id}"
    for flag in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert block[flag] is True, flag
    ownership = resources[("aws_s3_bucket_ownership_controls", "this")]
    assert ownership["rule"][0]["object_ownership"] == "BucketOwnerEnforced"


def test_s3_bucket_policy_denies_insecure_transport():
    policy = typed(S3, "resource")[("aws_s3_bucket_policy", "this")]
    assert policy["policy"] == "${data.aws_iam_policy_document.bucket.json}"
    static, _ = statements(typed(S3, "data")[("aws_iam_policy_document", "bucket")])
    denies = [s for s in static if s["effect"] == "Deny" and s["actions"] == ["s3:*"]]
    assert any(
        c["variable"] == "aws:SecureTransport" and c["values"] == ["false"]
        for s in denies
        for c in s["condition"]
    )


def test_s3_default_encryption_is_sse_kms():
    sse = typed(S3, "resource")[("aws_s3_bucket_server_side_encryption_configuration", "this")]
    default = sse["rule"][0]["apply_server_side_encryption_by_default"][0]
    assert default["sse_algorithm"] == "aws:kms"
    assert default["kms_master_key_id"] == "${var.kms_key_arn}"
    assert named(S3, "variable")["kms_key_arn"]["default"] is None


# --- variables, outputs, providers, docs ---------------------------------------------------


@pytest.mark.parametrize("directory", TF_DIRS, ids=lambda p: str(p.relative_to(TF_ROOT)))
def test_every_variable_has_type_and_description(directory):
    variables = named(directory, "variable")
    assert variables
    for name, body in variables.items():
        assert body.get("type"), f"variable {name} has no type"
        assert str(body.get("description", "")).strip(), f"variable {name} has no description"


@pytest.mark.parametrize("directory", TF_DIRS, ids=lambda p: str(p.relative_to(TF_ROOT)))
def test_every_output_has_description(directory):
    outputs = named(directory, "output")
    assert outputs
    for name, body in outputs.items():
        assert str(body.get("description", "")).strip(), f"output {name} has no description"


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_export_prefix_validation(module):
    condition = named(module, "variable")["export_prefixes"]["validation"][0]["condition"]
    assert "length(var.export_prefixes) > 0" in condition
    pattern = re.compile(re.search(r'regex\("([^"]+)", p\)', condition).group(1))
    for good in ("models/ranker", "ranker", "team-a/jobs/ranker/model", "v1.2/x_y=z"):
        assert pattern.fullmatch(good), good
    for bad in ("", "/models/ranker", "models/ranker/", "models//ranker", "models/'x", 'a"b'):
        assert not pattern.fullmatch(bad), bad


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_day_counts_must_be_positive_whole_numbers(module):
    variables = named(module, "variable")
    for name in ("staging_expiration_days", "noncurrent_version_expiration_days"):
        assert variables[name]["type"] == "number"
        condition = variables[name]["validation"][0]["condition"]
        assert f"var.{name} > 0" in condition
        assert f"floor(var.{name}) == var.{name}" in condition


@pytest.mark.parametrize("module", MODULES, ids=lambda p: p.name)
def test_bucket_name_is_validated(module):
    condition = named(module, "variable")["bucket_name"]["validation"][0]["condition"]
    pattern = re.compile(re.search(r'regex\("([^"]+)", var\.bucket_name\)', condition).group(1))
    assert pattern.fullmatch("ml-exports-prod")
    for bad in ("Ab", "ab", "-abc", "abc-", "UPPER-case"):
        assert not pattern.fullmatch(bad), bad


@pytest.mark.parametrize("directory", TF_DIRS, ids=lambda p: str(p.relative_to(TF_ROOT)))
def test_terraform_and_provider_versions_are_pinned(directory):
    (settings,) = config(directory)["terraform"]
    assert "<" in settings["required_version"]
    for providers in settings["required_providers"]:
        for name, spec in providers.items():
            assert spec["source"].startswith("hashicorp/"), name
            assert "<" in spec["version"] or "~>" in spec["version"], f"{name} has no upper bound"


def test_every_checkov_skip_gives_a_reason():
    skips = [
        line.strip()
        for path in TF_FILES
        for line in path.read_text().splitlines()
        if "checkov:skip" in line
    ]
    assert skips, "expected the documented skips"
    for line in skips:
        assert re.fullmatch(r"#checkov:skip=CKV2?_[A-Z]+_\d+:\S.{20,}", line), line


@pytest.mark.parametrize("directory", TF_DIRS, ids=lambda p: str(p.relative_to(TF_ROOT)))
def test_readme_documents_every_input_and_output(directory):
    readme = (directory / "README.md").read_text()
    for kind in ("variable", "output"):
        for name in named(directory, kind):
            assert f"| `{name}` |" in readme, f"{directory.name}/README.md lacks {kind} {name}"
