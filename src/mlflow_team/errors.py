"""Exception types and the message templates users meet.

Every rejection says what was rejected (with the value), the rule in one clause, how to fix it
with an example, and the rule id. The store raises subclasses of ``MlflowException`` because that
is the only error type ``mlflow server`` turns into a readable REST error.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    DATA_LOSS,
    INVALID_PARAMETER_VALUE,
    PERMISSION_DENIED,
    RESOURCE_CONFLICT,
    RESOURCE_DOES_NOT_EXIST,
    TEMPORARILY_UNAVAILABLE,
    UNAUTHENTICATED,
)

# --- policy rules ----------------------------------------------------------------------------

EXPERIMENT_NAME_REJECTED = (
    "Experiment name {value} was rejected: experiment names must match '{pattern}'. "
    "Use a name like {example!r}, for example mlflow.set_experiment({example!r}). "
    "[rule: experiment-name]"
)
REGISTERED_MODEL_NAME_REJECTED = (
    "Registered model name {value} was rejected: registered model names must match '{pattern}'. "
    "Use a name like {example!r}, for example mlflow.register_model(model_uri, {example!r}). "
    "[rule: registered-model-name]"
)
REQUIRED_TAGS_MISSING = (
    "Run in experiment {experiment} was rejected: runs must carry the tag(s) {missing}. "
    "Set them when starting the run, for example mlflow.start_run(tags={example}), or give "
    "them a default under [required-tags.defaults] in the policy file. [rule: required-tags]"
)
#: The same refusal for a run an autologger created (``mlflow.autologging`` tag): fix it there.
REQUIRED_TAGS_MISSING_AUTOLOGGED = (
    "Run in experiment {experiment}, started by {autologger} autologging, was rejected: runs "
    "must carry the tag(s) {missing}. Give them to autologging, for example {call}, or give "
    "them a default under [required-tags.defaults] in the policy file. [rule: required-tags]"
)
#: ``{call}`` of REQUIRED_TAGS_MISSING_AUTOLOGGED for hyperopt autologging, and for MLflow's own.
AUTOLOG_CALL_HYPEROPT = "mlflow_team.hyperopt.autolog(extra_tags={example})"
AUTOLOG_CALL_MLFLOW = "mlflow.autolog(extra_tags={example}) (mlflow.{flavor}.autolog takes extra_tags too)"
REQUIRED_TAG_DELETE = (
    "Deleting tag {key!r} from run {run_id!r} was rejected: runs must carry the tag(s) "
    "{required}. Change its value instead, for example "
    "mlflow.set_tag({key!r}, 'new-value'). [rule: required-tags]"
)
#: A client's write of a reserved tag ([reserved-tags]) on any run, experiment, registered model
#: or model version; {change} is "value '...'" or "deleted", {fix} the call with a key of one's own.
RESERVED_TAG_REJECTED = (
    "Tag {key!r} ({change}) on {on} was rejected: the tags {tags} are reserved by the team "
    "policy, written only by the mlflow-team store, and clients cannot set, change or delete them "
    "on runs, experiments, registered models or model versions. Use a key of your own, for "
    "example {fix}. [rule: reserved-tags]"
)
#: The same for the author tags while identity stamping is on (the default).
AUTHOR_TAG_REJECTED = (
    "Tag {key!r} ({change}) on {on} was rejected: the author tags {tags} are stamped by the "
    "mlflow-team store from the request's identity when a run or model version is created, and "
    "clients cannot set, change or delete them on runs, experiments, registered models or model "
    "versions. Record other people under a key of your own, for example {fix}. [rule: identity]"
)

# --- identity (server side): never quote a key or a signature in these ----------------------

UNSIGNED_REJECTED = (
    "The author {author} was rejected: this server accepts only signed or authenticated "
    "identities, and the request carried no signature. Sign your requests with your personal "
    "key, for example: export MLFLOW_TEAM_AUTHOR_KEY=<your key> MLFLOW_TRACKING_AUTH=team "
    "(`mlflow-team identity --server URL` checks the set-up). [rule: identity]"
)
#: ``[identity] require-verified = true``: ``{how}`` is one of the UNVERIFIED_HOW_* below.
UNVERIFIED_REJECTED = (
    "The request (author: {author}) was rejected: this server accepts only verified authors "
    "([identity] require-verified = true), and the request was neither signed nor logged in. "
    "{how} `mlflow-team identity --server URL` checks the set-up. [rule: identity]"
)
UNVERIFIED_HOW_SIGN = (
    "Sign your requests with the personal key the server's keyring holds for you: pip install "
    "mlflow-team, then export MLFLOW_TRACKING_AUTH=team MLFLOW_TEAM_AUTHOR=<your name in the keyring> "
    "MLFLOW_TEAM_AUTHOR_KEY=<your key> (no key yet: `mlflow-team identity new-key` makes one for "
    "the admin to add)."
)
UNVERIFIED_HOW_LOGIN = (
    "Log in: export MLFLOW_TRACKING_USERNAME=<your user> MLFLOW_TRACKING_PASSWORD=<your password>."
)
UNVERIFIED_HOW_SIGN_OR_LOGIN = (
    "Log in (export MLFLOW_TRACKING_USERNAME=<your user> MLFLOW_TRACKING_PASSWORD=<your password>), "
    "or sign your requests with the personal key the server's keyring holds for you: pip install "
    "mlflow-team, then export MLFLOW_TRACKING_AUTH=team MLFLOW_TEAM_AUTHOR=<your name in the keyring> "
    "MLFLOW_TEAM_AUTHOR_KEY=<your key>."
)
UNVERIFIED_HOW_NONE = (
    "This server has no way to verify anyone yet: its admin must add a keyring "
    "([identity] keyring = 'keyring.toml') or run it with --app-name basic-auth."
)
SIGNATURE_STALE = (
    "The author signature for {author!r} was rejected: it was made {age} s away from the "
    "server's clock, and the server accepts {skew} s. A replayed request looks like this too. "
    "Check the client's clock (for example `timedatectl`) and send the request again. "
    "[rule: identity]"
)
SIGNATURE_MISMATCH = (
    "The author signature for {author!r} was rejected: it does not match the key the server "
    "holds for that author, or the request was changed after signing. Check that "
    "MLFLOW_TEAM_AUTHOR_KEY (or MLFLOW_TEAM_AUTHOR_KEY_FILE) holds the key registered for "
    "{author!r} in the server's keyring; `mlflow-team identity --server URL` checks it. "
    "[rule: identity]"
)
SIGNATURE_REPLAYED = (
    "The author signature for {author!r} was rejected: this exact signed request was already "
    "used. Each signed request is accepted once; send a new request instead of repeating a "
    "captured one. [rule: identity]"
)
REPLAY_RECORD_FAILED = (
    "The author signature for {author!r} could not be checked against the signatures already "
    "used: the database did not record it ({reason}). Nothing was created; send the request "
    "again. [rule: identity]"
)
AUTHOR_UNKNOWN = (
    "The author {author!r} was rejected: the server's keyring has no key for that author. Ask "
    "the server's admin to add one (`mlflow-team identity new-key` makes a key), or set "
    "MLFLOW_TEAM_AUTHOR to the name your key is registered under. [rule: identity]"
)
SIGNATURE_MALFORMED = (
    "The author signature headers were rejected: {problem}. Let the mlflow-team client sign the "
    "requests (MLFLOW_TRACKING_AUTH=team) instead of writing the headers by hand. "
    "[rule: identity]"
)
PROBE_ANSWER = (
    "mlflow-team identity probe: the server accepts you as {author!r} (verified: {verified}, "
    "from: {source}). Nothing was created."
)
KEYRING_INVALID = "keyring {path}: {problem}"

VALUE_TOO_LONG = (
    "{kind} {key!r} value {value} ({length} characters) was rejected: {kind_lower} values are "
    "limited to {limit} characters and stock MLflow would silently truncate it. Log the full "
    "text as an artifact instead, for example mlflow.log_text(value, '{artifact}'). "
    "The whole team can opt out with [lossless-values] enabled = false in the policy file. "
    "[rule: lossless-values]"
)
METRIC_NOT_FINITE = (
    "Metric {key!r} value {value!r} was rejected: metric values must be finite floats (stock "
    "MLflow would store it as {stored!r}). Clip or skip it, for example "
    "mlflow.log_metric({key!r}, min(value, 1e308)). The whole team can opt out with "
    "[lossless-values] enabled = false in the policy file. [rule: lossless-values]"
)
METRIC_NOT_INTEGRAL = (
    "Metric {key!r} {field} {value!r} was rejected: metric {field}s must be whole numbers (stock "
    "MLflow would store {stored!r}). Pass an integer, for example {field}={example!r}. "
    "The whole team can opt out with [lossless-values] enabled = false in the policy file. "
    "[rule: lossless-values]"
)
RUN_DELETE_PROTECTED = (
    "Run {run_id!r} cannot be deleted: it backs the registered model version(s) {versions}. "
    "Delete those versions first, for example "
    "MlflowClient().delete_model_version({name!r}, {version!r}). The whole team can opt out with "
    "[protected-deletions] enabled = false in the policy file. [rule: protected-deletions]"
)
EXPERIMENT_DELETE_PROTECTED = (
    "Experiment {experiment_id!r} cannot be deleted: its runs or models back the registered "
    "model version(s) {versions}. Delete those versions first, for example "
    "MlflowClient().delete_model_version({name!r}, {version!r}). The whole team can opt out with "
    "[protected-deletions] enabled = false in the policy file. [rule: protected-deletions]"
)
LOGGED_MODEL_DELETE_PROTECTED = (
    "Logged model {model_id!r} cannot be deleted: it backs the registered model version(s) "
    "{versions}. Delete those versions first, for example "
    "MlflowClient().delete_model_version({name!r}, {version!r}). The whole team can opt out with "
    "[protected-deletions] enabled = false in the policy file. [rule: protected-deletions]"
)
MODEL_VERSION_DELETE_PROTECTED = (
    "Version {version!r} of registered model {name!r} cannot be deleted: it holds the "
    "alias(es) {aliases}. Remove them first, for example "
    "MlflowClient().delete_registered_model_alias({name!r}, {alias!r}). "
    "The whole team can opt out with [protected-deletions] enabled = false in the policy "
    "file. [rule: protected-deletions]"
)
REGISTERED_MODEL_DELETE_PROTECTED = (
    "Registered model {name!r} cannot be deleted: its versions hold the alias(es) {aliases}. "
    "Remove them first, for example "
    "MlflowClient().delete_registered_model_alias({name!r}, {alias!r}). "
    "The whole team can opt out with [protected-deletions] enabled = false in the policy "
    "file. [rule: protected-deletions]"
)
VERSION_FROM_DELETED_RUN = (
    "A version of registered model {name!r} from run {run_id!r} was rejected: that run is "
    "deleted, and a registered version must not depend on a deleted run. Restore it first, for "
    "example MlflowClient().restore_run({run_id!r}). The whole team can opt out with "
    "[protected-deletions] enabled = false in the policy file. [rule: protected-deletions]"
)

# --- configuration and set-up ---------------------------------------------------------------

POLICY_FILE_INVALID = "Policy file {path}: {problem}"
POLICY_UNKNOWN_RULE = (
    "unknown rule [{key}]. Known rules: {known}. Check the spelling, for example [experiment-name]."
)
POLICY_UNKNOWN_KEY = (
    "unknown key {key!r} in [{rule}]. Known keys: {known}. For example: {example}"
)
POLICY_WRONG_TYPE = "[{rule}] {key} = {value!r} must be {expected}. For example: {example}"
POLICY_BAD_PATTERN = (
    "[{rule}] pattern = '{value}' is not a valid regular expression ({reason}). "
    "For example: pattern = '^[a-z0-9-]+/[a-z0-9-]+$'"
)
POLICY_EXAMPLE_MISMATCH = (
    "[{rule}] example = {value!r} does not match its own pattern '{pattern}'. "
    "Give an example name that the pattern accepts."
)
POLICY_NOT_TOML = "is not valid TOML ({reason}). Fix the syntax; `mlflow-team policy check FILE` checks it."
POLICY_REQUIRE_VERIFIED_CONFLICT = (
    "[identity] require-verified = true refuses unsigned authors and allow-unsigned = true accepts "
    "them: keep one of the two lines, for example require-verified = true alone."
)
POLICY_ENV_MISSING = (
    "MLFLOW_TEAM_POLICY={value!r} names a file that does not exist. Point it at a policy file, "
    "for example MLFLOW_TEAM_POLICY=./mlflow-team.toml, or unset it to use the defaults."
)

#: Logged once per file: a file in the working directory that looks like the policy but is not read.
POLICY_NEAR_MISS = (
    "The file {found!r} in {cwd} looks like a policy file but is not read: mlflow-team reads "
    "{default!r} in the working directory, or the file {env} names, and the policy in force "
    "comes from {source}. Rename it to {default} (the policy is TOML), or point {env} at it, "
    "for example: export {env}={path}"
)
#: A missing optional dependency (:mod:`mlflow_team.extras`): raised by the store, the CLI and
#: the artifact repositories; DEGRADED is logged instead where mlflow-team must not raise.
MISSING_DEPENDENCY = (
    "{needed_for} needs {what}, which is not installed here ({reason}). Install it with: {install}"
)
MISSING_DEPENDENCY_DEGRADED = (
    "{needed_for} needs {what}, which is not installed here ({reason}), so {consequence}. "
    "Install it with: {install}"
)

UNSUPPORTED_SCHEME = (
    "Tracking URI {uri!r} was rejected: mlflow-team supports {supported}. Use one of them, for "
    "example 'team+sqlite:///mlflow.db'."
)
SCHEMA_OUT_OF_DATE = (
    "The database behind {uri!r} has an out-of-date MLflow schema (found revision {found}, "
    "expected {expected}). Take a backup, then run: mlflow-team db upgrade {uri}"
)
SCHEMA_NEWER_THAN_MLFLOW = (
    "The database behind {uri!r} has a newer MLflow schema (revision {found}) than the "
    "installed MLflow {version} knows (its newest is {expected}): a newer MLflow wrote it. "
    "Upgrade MLflow, for example pip install --upgrade \"mlflow>={version}\", to the version "
    "the rest of the team runs; never downgrade the database."
)
ARTIFACT_GUARD_UNAVAILABLE = (
    "The {scheme} artifact repository for {uri!r} was not started: on MLflow {version} "
    "mlflow-team cannot check artifact downloads ({reason}), so a damaged artifact could be "
    "returned as good. Install an MLflow release mlflow-team supports ({tested}), or use the "
    "plain {plain} scheme, which stock MLflow serves without checks."
)
DATABASE_UNREACHABLE = (
    "The database behind {uri!r} did not answer after MLflow's retries ({reason}). Check that "
    "its server is up and that the host, port, database name, user and password in the URL are "
    "right; `mlflow-team doctor --tracking-uri URL` checks it without creating anything."
)
GC_GUARD_UNAVAILABLE = (
    "The team store for {uri!r} was not started: its policy protects deletions, and on MLflow "
    "{version} mlflow-team cannot guard `mlflow gc` ({reason}), so gc could delete the files "
    "of a registered model. Install an MLflow release mlflow-team supports ({tested}), or turn "
    "the rule off in the policy file with [protected-deletions] enabled = false. "
    "[rule: protected-deletions]"
)

# --- artifacts -------------------------------------------------------------------------------

ARTIFACT_PATH_REJECTED = (
    "The {what} {path!r} was rejected: artifact paths must stay inside the artifact root, so "
    "absolute paths and '..' segments (also percent-encoded) are not allowed. Use a relative "
    "path such as 'model/weights.bin'."
)
ARTIFACT_DELETE_REFUSED = (
    "Deleting the artifacts at {path!r} was refused: a deletion may cover one run's, logged "
    "model's or trace's artifacts (a path like '<experiment>/<run id>/artifacts/...') and "
    "nothing wider, so the artifact root and whole experiments are never deleted through the "
    "repository. Delete runs instead (mlflow.delete_run, then mlflow gc)."
)
CHECKSUM_MISMATCH = (
    "Artifact {artifact!r} failed its integrity check: its SHA-256 is {actual} but {expected} "
    "was recorded when it was logged, so the stored copy is damaged or was changed outside "
    "MLflow. Nothing was written to {destination!r}. Log the artifact again from its source, or "
    "restore the object from a backup or an earlier S3 version."
)
S3_BUCKET_MISSING = (
    "The bucket {bucket!r} of {uri!r} does not exist (or is not visible to these credentials). "
    "Create it (aws s3 mb s3://{bucket}) or fix the artifact root, for example "
    "--default-artifact-root team+s3://my-bucket/mlflow."
)
S3_NO_CREDENTIALS = (
    "No AWS credentials were found for {uri!r}. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
    "or AWS_PROFILE, or run where an instance/role profile provides them (the standard AWS "
    "credential chain is used, as by stock MLflow)."
)
S3_ACCESS_DENIED = (
    "Access to {uri!r} was denied by S3 ({operation}: {detail}). The credentials in use need "
    "s3:PutObject, s3:GetObject, s3:ListBucket, s3:PutObjectTagging, s3:DeleteObject, "
    "s3:ListBucketMultipartUploads and s3:AbortMultipartUpload on the bucket and prefix (and "
    "kms:GenerateDataKey/kms:Decrypt for aws:kms encryption)."
)
S3_BAD_CREDENTIALS = (
    "S3 did not accept the credentials used for {uri!r} ({operation}: {detail}). The access key "
    "is unknown, the secret does not match it, or the session token has expired: check "
    "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN or AWS_PROFILE."
)
S3_REQUEST_FAILED = "S3 {operation} on {uri!r} failed: {detail}"
PRESIGNED_UPLOAD_REFUSED = (
    "A presigned upload URL for {path!r} was refused: a file sent straight to S3 through it would "
    "skip what {scheme} gives every object (the SHA-256 that S3 checks on receipt and that "
    "downloads are checked against, the run's object tags, the policy's encryption). Upload "
    "through MLflow instead, for example MlflowClient().log_artifact(run_id, 'model.pkl'), or "
    "MLflow's multipart upload (MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD=true) through a server "
    "with --artifacts-destination {scheme}://..., which records all three."
)
PRESIGNED_DOWNLOAD_REFUSED = (
    "A presigned download URL for {path!r} was refused: a file fetched straight from S3 through "
    "it would skip the SHA-256 check that {scheme} makes before a download is written, so a "
    "damaged or replaced artifact would be returned as good. Download through MLflow instead, "
    "for example mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path={path!r})."
)
ARTIFACT_UPLOAD_INCOMPLETE = (
    "Downloading {path!r} was refused: the upload into {folder!r} has not finished (it left the "
    "marker {marker!r}, which lists its files), so some of the files may be missing or older "
    "copies. Nothing was written. If that upload was stopped, log the folder again, for example "
    "mlflow.log_artifacts(local_dir, {folder!r}); it removes the marker. Single files of the "
    "folder can still be downloaded: each is stored whole."
)
ARTIFACT_OWNER_UNKNOWN = (
    "Artifact {artifact!r} was not uploaded: mlflow-team could not read {what} {id!r} from the "
    "tracking store {tracking} ({attempts} attempt(s); {reason}). The {what}'s experiment decides "
    "the object's encryption key and tags, so the upload is refused rather than stored with the "
    "defaults. Check that the tracking store answers (mlflow-team doctor --tracking-uri URL) and "
    "that the {what} exists, then log the artifact again."
)
ARTIFACT_SETTINGS_INVALID = (
    "[artifacts] {key} = {value!r} was rejected: {rule}. For example: {example}"
)


def preview(value: object, limit: int = 80) -> str:
    """``repr`` of a value, shortened so a message never carries a whole blob."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 4] + "...'"


class PolicyViolation(MlflowException):
    """A request the team policy rejects. ``rule`` is the stable rule id."""

    def __init__(self, message: str, rule: str, error_code: int = INVALID_PARAMETER_VALUE):
        super().__init__(message, error_code=error_code)
        self.rule = rule


class ProtectedResource(PolicyViolation):
    """A deletion refused because something registered still depends on the target."""

    def __init__(self, message: str):
        super().__init__(message, rule="protected-deletions", error_code=PERMISSION_DENIED)


class ReservedTag(PolicyViolation):
    """A client write to a tag that only the store may stamp."""

    def __init__(self, message: str, rule: str = "reserved-tags"):
        super().__init__(message, rule=rule, error_code=PERMISSION_DENIED)


class IdentityRejected(PolicyViolation):
    """A request whose author the server cannot accept (HTTP 401 through ``mlflow server``)."""

    def __init__(self, message: str):
        super().__init__(message, rule="identity", error_code=UNAUTHENTICATED)


class PolicyFileError(MlflowException):
    """The policy file cannot be used; raised when the store is built, never per request."""

    def __init__(self, path: str, problem: str):
        super().__init__(
            POLICY_FILE_INVALID.format(path=path, problem=problem),
            error_code=INVALID_PARAMETER_VALUE,
        )
        self.path = path


class TeamStoreConfigError(MlflowException):
    """A ``team+`` URI or database that the store cannot be built on."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class MissingDependency(TeamStoreConfigError):
    """An optional dependency that is not installed; the message names the extra that installs it."""

    def __init__(self, message: str, module: str, extra: str):
        super().__init__(message)
        self.module = module
        self.extra = extra


class IdentityProbeAnswer(MlflowException):
    """Not an error: the answer to `mlflow-team identity --server`, carried as one."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class ArtifactPathRejected(MlflowException):
    """An artifact path that would leave the repository's root."""

    def __init__(self, message: str):
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class ArtifactDeletionRefused(MlflowException):
    """A deletion wider than one run's (or model's, or trace's) artifacts."""

    def __init__(self, message: str):
        super().__init__(message, error_code=PERMISSION_DENIED)


class ChecksumMismatch(MlflowException):
    """A stored artifact whose bytes no longer match the SHA-256 recorded at upload."""

    def __init__(self, message: str):
        super().__init__(message, error_code=DATA_LOSS)


class ArtifactStorageError(MlflowException):
    """S3 refused or failed a request; the message says which and what to do."""

    def __init__(self, message: str, error_code: int = INVALID_PARAMETER_VALUE):
        super().__init__(message, error_code=error_code)


class OwnerUnknown(MlflowException):
    """An upload refused because its run's (or model's) experiment could not be read."""

    def __init__(self, message: str, error_code: int = TEMPORARILY_UNAVAILABLE):
        super().__init__(message, error_code=error_code)


class ArtifactIncomplete(MlflowException):
    """A folder download refused because a directory upload into it has not finished."""

    def __init__(self, message: str):
        super().__init__(message, error_code=RESOURCE_CONFLICT)


ARTIFACT_ERROR_CODES = {
    "missing": RESOURCE_DOES_NOT_EXIST,
    "denied": PERMISSION_DENIED,
    "credentials": UNAUTHENTICATED,
    "rejected": INVALID_PARAMETER_VALUE,  # S3 answered 4xx to the request itself
    "unavailable": TEMPORARILY_UNAVAILABLE,  # connection failures, S3 5xx: worth a retry
}

# --- eject: the way back to stock MLflow -----------------------------------------------------

EJECT_NO_TRACKING_URI = (
    "No tracking URI was given: mlflow-team eject rewrites a database and needs its URL. Pass "
    "it, for example mlflow-team eject --tracking-uri team+sqlite:///mlflow.db, or set "
    "MLFLOW_TRACKING_URI."
)
EJECT_NOT_A_DATABASE = (
    "Tracking URI {uri!r} is not a database URL: eject rewrites MLflow's tables in the database "
    "itself, so it takes {supported} (with or without the team+ prefix). For a tracking server, "
    "give the server's --backend-store-uri, for example "
    "mlflow-team eject --tracking-uri team+postgresql://mlflow@db-host:5432/mlflow."
)
EJECT_NO_MLFLOW_TABLES = (
    "The database {uri!r} holds no MLflow tracking data ({reason}), so there is nothing to "
    "eject. Give the URL your team+ tracking URI names, for example "
    "--tracking-uri team+sqlite:///mlflow.db from the folder that holds mlflow.db."
)
EJECT_CANNOT_OPEN = (
    "The database {uri!r} could not be opened ({reason}). Check that its server answers and "
    "that the URL, user and driver are right (pip install -e \".[postgres]\" or \".[mysql]\" "
    "installs the drivers)."
)
EJECT_DROP_FAILED = (
    "Ejecting {uri!r} rewrote every location, but dropping mlflow-team's own table {table} "
    "failed ({reason}). Stock MLflow ignores that table; run mlflow-team eject --tracking-uri URL "
    "--apply again, or drop it by hand: DROP TABLE {table}"
)
EJECT_FAILED = (
    "Ejecting {uri!r} failed while rewriting {table}.{column} ({reason}). Nothing was changed: "
    "eject rewrites everything in one transaction, and it was rolled back. Fix the cause, then "
    "run mlflow-team eject --tracking-uri URL --apply again."
)

# --- the team server app: request bodies ------------------------------------------------------

REQUEST_BODY_EMPTY = (
    "{endpoint} was sent with an empty body; it takes a JSON object, and nothing was created or "
    "changed. Send the request's fields as JSON, for example {{\"experiment_id\": \"0\"}} for "
    "runs/create (Content-Type: application/json)."
)
REQUEST_BODY_NOT_JSON = (
    "{endpoint} was sent a body that is not valid JSON ({problem}); nothing was created or "
    "changed. Send one complete JSON object (Content-Type: application/json)."
)
REQUEST_BODY_NOT_OBJECT = (
    "{endpoint} was sent a JSON {kind} as its body; it takes a JSON object of the request's "
    "fields, and nothing was created or changed. Wrap the fields in {{...}}."
)
REQUEST_BODY_TOO_DEEP = (
    "{endpoint} was sent JSON nested more than {limit} levels deep; no MLflow request nests "
    "that deep, and nothing was created or changed. Send the request's fields as MLflow's API "
    "documents them."
)
REQUEST_FIELD_NOT_OBJECTS = (
    "{endpoint}: {field} must be a list of objects, for example {example}; it holds {got}. "
    "Nothing was created or changed."
)
REQUEST_FIELD_OVERFLOW = (
    "{endpoint}: {field} = {text} is beyond the range of a 64-bit float (about 1.8e308), and "
    "would be stored as something else. Nothing was created or changed; send a value in range "
    "(or the string \"Infinity\" if an infinite value is meant)."
)
REQUEST_FIELD_NOT_INT64 = (
    "{endpoint}: {field} = {value} is not {what}. Nothing was created or changed; send a whole "
    "number from -9223372036854775808 to 9223372036854775807 (milliseconds since the epoch for "
    "a timestamp)."
)
ARTIFACT_DESTINATION_UNREACHABLE = (
    "mlflow-team: the artifact destination {destination} does not answer ({problem}); uploads "
    "and downloads through this server will fail. Create the bucket or folder, or fix "
    "--artifacts-destination and the server's credentials, then restart the server."
)
SERVER_ERROR_HIDDEN = (
    "The server could not complete this request ({code}); the details name the server's database "
    "or files, so they are in the server's log, under reference {reference}, and not here. Give "
    "that reference to whoever runs the server."
)

# --- doctor ----------------------------------------------------------------------------------

SQLITE_DATABASE_MISSING = (
    "The SQLite database {path} behind {uri!r} does not exist ({what}); doctor checks a store "
    "and never creates one. Fix the path (a relative one counts from the working directory, "
    "{cwd}), or create the database with: mlflow-team db upgrade {uri}"
)

# --- stale runs: heartbeats and the reaper (team server app) ---------------------------------

#: The heartbeat endpoint's answer to a body it cannot read (400).
HEARTBEAT_BAD_REQUEST = (
    "A heartbeat was rejected: its body must be JSON like {{\"run_id\": \"<run id>\"}} or "
    "{{\"run_ids\": [\"<run id>\", ...]}} with 1 to {limit} run ids; got {got}. The mlflow-team "
    "client plugin sends these itself while a fluent run (mlflow.start_run) is active."
)
#: The endpoint's answer (404) and the server's log line where the backend store is no database.
HEARTBEAT_NO_DATABASE = (
    "This server keeps no heartbeats: its backend store ({store}) is not a database, so the team "
    "server app can neither record heartbeats nor end stale runs. Run it on one, for example "
    "mlflow server --app-name team --backend-store-uri team+sqlite:///mlflow.db"
)
#: The endpoint's answer (503) when the database failed; the client sends the next one anyway.
HEARTBEAT_NOT_RECORDED = (
    "The heartbeat of run(s) {run_ids} was not recorded: the database failed ({reason}). The "
    "next heartbeat is sent as usual; the run is ended as stale only if none gets through for "
    "{stale} s."
)
#: The server's log line when a sweep of the reaper fails (it tries again; the server runs on).
REAPER_FAILED = (
    "mlflow-team: the stale-run reaper of this worker failed ({reason}); it tries again every "
    "{interval:g} s, and until it succeeds, runs whose client stopped sending heartbeats stay "
    "RUNNING."
)
#: The server's log line for each run it ends.
RUN_ENDED_STALE = (
    "mlflow-team: run {run_id} had no heartbeat for {silent} s (stale-after-seconds = {stale}): "
    "ended it FAILED with tag team.end_reason=stale."
)
#: A client's one warning when its heartbeats fail ({stale}: the server's stale-after, if known).
HEARTBEAT_CLIENT_FAILED = (
    "mlflow-team: heartbeats for run(s) {run_ids} to {server} failed ({reason}). The run goes "
    "on, but a team server that hears none for {stale} ends it FAILED as stale. Set "
    "MLFLOW_TEAM_HEARTBEAT=off to stop sending them."
)
#: A client's warning when the server reports its active run already ended (reaped, or ended
#: by another client); once per run.
HEARTBEAT_RUN_ENDED = (
    "mlflow-team: {server} reports run {run_id} as {status}{reason} while this process still has "
    "it active; heartbeats for it stop. A run whose client is silent for {stale} s is ended as "
    "stale: check the network between this process and the server."
)

# --- the team server app: guards (artifact deletions, search regular expressions) ------------

#: DELETE on the artifact proxy (``--artifacts-destination``), whatever the destination's scheme.
PROXY_DELETE_REFUSED = (
    "Deleting the artifacts at {path} through the artifact proxy was refused: a deletion may "
    "cover one run's, logged model's or trace's artifacts and nothing wider ('<experiment>/<run "
    "id>/artifacts/...', '<experiment>/models/<model id>/artifacts/...' or "
    "'<experiment>/traces/<trace id>/artifacts/...'), so the artifact root, an experiment's "
    "folder and paths with '..' (also percent-encoded) are never deleted. Nothing was deleted. "
    "To remove a run's artifacts, delete the run and collect it: mlflow.delete_run(run_id), then "
    "mlflow gc --backend-store-uri URL --run-ids RUN_ID. [rule: artifact-deletions]"
)
#: The server cannot see every artifact deletion (MLflow serves one outside its Flask app).
PROXY_DELETE_GUARD_UNAVAILABLE = (
    "The mlflow-team server app was not started: on MLflow {version} the artifact proxy answers "
    "DELETE {route} outside the Flask app where mlflow-team checks deletions, so an experiment's "
    "or the whole root's artifacts could be deleted in one request. Install an MLflow release "
    "mlflow-team supports ({tested}), or run without the proxy (--no-serve-artifacts). "
    "[rule: artifact-deletions]"
)
#: An RLIKE pattern refused before the search runs; {reason} is one of REGEX_REASON_*.
SEARCH_REGEX_REFUSED = (
    "The regular expression {pattern} in the search filter was refused: {reason}, or use LIKE, "
    "for example tags.model LIKE 'xgb-%'. [rule: search-regex]"
)
REGEX_REASON_NESTED = (
    "it repeats a group that itself contains a repetition ({found}), which can backtrack for "
    "seconds or hours on one short value and stall the server for everyone. Repeat a character "
    "class instead, for example '^xgb-[0-9.]+$' rather than '^xgb-([0-9]+\\.)+$'"
)
REGEX_REASON_BACKREFERENCE = (
    "it uses a backreference ({found}), which can take exponential time on one short value and "
    "stall the server for everyone. Spell the repeated text out, for example 'xgb-xgb' rather "
    "than '(xgb)-\\1'"
)
#: A search whose regular expressions ran past ``[server] regex-budget-ms``.
SEARCH_REGEX_CUT_OFF = (
    "The search was stopped: matching its regular expression {pattern} took longer than this "
    "server's budget of {budget_ms} ms ([server] regex-budget-ms in the policy file), so no "
    "result was returned. Anchor the pattern and avoid alternatives that overlap, for example "
    "'^xgb' rather than '(x|xg)*b', use LIKE, for example tags.model LIKE 'xgb%', or narrow the "
    "search with other filters. [rule: search-regex]"
)


class SearchRegexRefused(PolicyViolation):
    """A search filter's regular expression refused, or cut off, by the team server app."""

    def __init__(self, message: str):
        super().__init__(message, rule="search-regex")


class ProxyDeletionRefused(PolicyViolation):
    """A DELETE on the artifact proxy wider than one run's, logged model's or trace's artifacts."""

    def __init__(self, message: str):
        super().__init__(message, rule="artifact-deletions", error_code=PERMISSION_DENIED)


#: Logged once per database by a team store whose database lacks the search index.
SEARCH_INDEX_MISSING = (
    "mlflow-team: search_runs on {uri} uses MLflow's own search path, which slows down past "
    "10,000 runs: the database lacks mlflow-team's search indexes ({index}). Add them with "
    "'mlflow-team db upgrade <the database URL>' (the team+ URL or the same URL without "
    "'team+'); it runs MLflow's migrations too, and 'mlflow-team eject' removes the indexes again."
)
#: eject rewrote every location but could not drop mlflow-team's index on ``runs``.
EJECT_DROP_INDEX_FAILED = (
    "Ejecting {uri!r} rewrote every location, but dropping mlflow-team's search indexes ({index}) "
    "failed ({reason}). Stock MLflow works with them in place; run mlflow-team eject "
    "--tracking-uri URL --apply again, or drop them by hand: DROP INDEX <name> (MySQL and "
    "MariaDB: DROP INDEX <name> ON <table>)"
)
