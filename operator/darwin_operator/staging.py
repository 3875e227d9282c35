"""The staging container: one model revision downloaded onto the weights volume (pure).

It runs the engine image's own hub client, `hf download MODEL --revision REV --local-dir DIR`,
then `hf cache verify` against the hub's file list (every file present, nothing extra, sha256 of
LFS files and git blob ids of the others), and only then writes a completion marker. A rerun
after an interruption resumes: files hf already finished are kept (hf 2.4 skips a file whose
local metadata names the same commit), a connection that drops mid-file continues with a Range
request inside hf, and only the file that was being written when the process died starts over.

A failure ends the container with an exit code of its own (FAILURES) and a one-line termination
message; parse_staging_failure() turns the terminated state into (reason, message) for a
condition and an Event. The operator builds and watches the pods; this module renders only.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

CONTAINER_NAME = "stage"
MARKER_NAME = ".darwin-staged.json"
STAGED_DIR = "staged"  # under the weights volume: staged/<org--name>/<revision>/
HF_HOME_DIR = "hf-home"
WEIGHTS_VOLUME = "weights"
DEFAULT_REVISION = "main"
TERMINATION_LOG = "/dev/termination-log"
MAX_MESSAGE_CHARS = 1024  # the kubelet keeps at most 4096 bytes per container


@dataclass(frozen=True)
class StagingFailure:
    exit_code: int
    reason: str  # condition and Event reason
    retryable: bool  # whether running the same pod again can succeed without a user's change
    pattern: str  # extended regex (grep -E) over hf's output; "" when the script decides itself
    message: str  # shell double-quoted text; may use $model $revision $target $detail $token_hint


# First match wins: a full disk shows up inside hf's network retries too, and a 401 also carries
# "Repository Not Found" (the hub answers 401 for private and missing repositories alike).
FAILURES: tuple[StagingFailure, ...] = (
    StagingFailure(
        20,
        "WeightsVolumeFull",
        False,
        r"No space left on device|Errno 28|Disk quota exceeded",
        "no space left on the weights volume at $target: $detail",
    ),
    StagingFailure(
        21,
        "WeightsVolumeNotWritable",
        False,
        r"Permission denied|Read-only file system|Errno 13|Errno 30",
        "cannot write the weights volume at $target: $detail",
    ),
    StagingFailure(
        22,
        "HubUnauthorized",
        False,
        r"401 Client Error|401 Unauthorized",
        "the hub answered 401 Unauthorized for $model: $token_hint, or the repository is private"
        " or does not exist",
    ),
    StagingFailure(
        23,
        "HubAccessDenied",
        False,
        r"GatedRepoError|403 Client Error|403 Forbidden",
        "the hub denied access to $model: the token's account has not been granted access"
        " to this gated repository",
    ),
    StagingFailure(
        24,
        "ModelNotFound",
        False,
        r"RepositoryNotFoundError|Repository Not Found",
        "the hub has no model $model",
    ),
    StagingFailure(
        25,
        "RevisionNotFound",
        False,
        r"RevisionNotFoundError|Revision Not Found",
        "the hub has no revision $revision of $model",
    ),
    StagingFailure(
        26,
        "HubUnreachable",
        True,
        r"ConnectError|ConnectTimeout|ReadTimeout|TimeoutException|RemoteProtocolError"
        r"|Connection refused|Connection reset|Name or service not known|Temporary failure in"
        r" name resolution|check your internet connection|5[0-9][0-9] Server Error",
        "could not download $model@$revision from the hub: $detail",
    ),
    StagingFailure(
        27,
        "DownloadIncomplete",
        True,
        "",
        "the download of $model@$revision does not match the hub's file list; the files"
        " that differ were removed and are fetched again on the next run: $detail",
    ),
    StagingFailure(
        28,
        "StagingFailed",
        True,
        "",
        "staging $model@$revision failed: $detail",
    ),
)
FAILURE_BY_CODE = {f.exit_code: f for f in FAILURES}
FAILURE_BY_REASON = {f.reason: f for f in FAILURES}
_INCOMPLETE = FAILURE_BY_REASON["DownloadIncomplete"]
_OTHER = FAILURE_BY_REASON["StagingFailed"]


def revision_dir_name(revision: str | None) -> str:
    """A revision as one path segment (branches may hold slashes: refs/pr/1)."""
    return (revision or DEFAULT_REVISION).replace("/", "--")


def model_dir(cache_dir: str, model_id: str, revision: str | None) -> str:
    """Where one model revision is staged on the weights volume mounted at cache_dir: one
    directory per revision, so a new revision is staged beside the one being served, the old
    one is removed whole, and vLLM loads the directory itself (HF_HUB_OFFLINE=1: no hub call,
    no lock files, so the volume may be mounted read-only)."""
    model = model_id.replace("/", "--")
    return f"{cache_dir.rstrip('/')}/{STAGED_DIR}/{model}/{revision_dir_name(revision)}"


def marker_path(cache_dir: str, model_id: str, revision: str | None) -> str:
    """The completion marker of a staged revision: present only after a checked download."""
    return f"{model_dir(cache_dir, model_id, revision)}/{MARKER_NAME}"


def hf_home(cache_dir: str) -> str:
    """HF_HOME on the weights volume, for the staging pods and the engine alike."""
    return f"{cache_dir.rstrip('/')}/{HF_HOME_DIR}"


def _classify_function() -> str:
    """`classify LOG`: the shell function that ends the script for hf's output in LOG."""
    lines = ["classify() {"]
    for failure in FAILURES:
        if not failure.pattern:
            continue
        lines += [
            f'  detail=$(grep -m1 -E {shlex.quote(failure.pattern)} "$1" | cut -c1-300)',
            f'  [ -n "$detail" ] && fail {failure.exit_code} "{failure.message}"',
        ]
    lines += [
        "  detail=$(grep -v '^[[:space:]]*$' \"$1\" | tail -n1 | cut -c1-300)",
        f'  fail {_OTHER.exit_code} "{_OTHER.message}"',
        "}",
    ]
    return "\n".join(lines)


# Runs in the engine image (bash, GNU coreutils/findutils, hf on the PATH).
_SCRIPT = r"""set -u
model=$DARWIN_MODEL
revision=$DARWIN_REVISION
target=$DARWIN_TARGET
marker="$target/__MARKER__"
termination_log=${DARWIN_TERMINATION_LOG:-__TERMINATION_LOG__}
logs=$(mktemp -d)
if [ -n "${HF_TOKEN:-}" ]; then
  token_hint="the token from model.tokenSecretRef was refused"
else
  token_hint="no token was given (model.tokenSecretRef is not set)"
fi

fail() {
  local message=${2//$'\n'/ }
  printf '%s' "${message:0:__MAX_MESSAGE__}" >"$termination_log"
  echo "staging failed (exit $1): $2" >&2
  exit "$1"
}

__CLASSIFY__

if [ -f "$marker" ]; then
  echo "$model@$revision is already staged in $target"
  exit 0
fi
mkdir -p "$target" 2>"$logs/prepare" && touch "$target/.darwin-write-check" 2>>"$logs/prepare" \
  || classify "$logs/prepare"
rm -f "$target/.darwin-write-check"
# hf writes a partial file under a name of its own that no later run resumes: drop leftovers.
find "$target/.cache/huggingface/download" -name '*.incomplete' -delete 2>/dev/null

echo "downloading $model@$revision into $target"
hf download "$model" --revision "$revision" --local-dir "$target" 2>&1 | tee "$logs/download"
[ "${PIPESTATUS[0]}" = 0 ] || classify "$logs/download"

# Check against the commit the files came from (a branch may have moved on since): hf has
# just written the metadata of every file of this run, so the newest names it (older ones may
# be left from an earlier commit of the branch).
commit=$revision
if ! [[ $revision =~ ^[0-9a-f]{40}$ ]]; then
  metadata=$(find "$target/.cache/huggingface/download" -name '*.metadata' -printf '%T@ %p\n' \
    | sort -n | tail -n1 | cut -d' ' -f2-)
  commit=$(head -n1 "$metadata")
fi
echo "verifying $model@$commit in $target against the hub's file list"
hf cache verify "$model" --revision "$commit" --local-dir "$target" \
  --fail-on-missing-files --fail-on-extra-files 2>&1 | tee "$logs/verify"
if [ "${PIPESTATUS[0]}" != 0 ]; then
  if ! grep -qE 'Checksum verification failed|Missing files|Extra files' "$logs/verify"; then
    classify "$logs/verify"
  fi
  # A finished file is never fetched again while its metadata names the commit: remove the
  # files that differ (and their metadata) so that the next run downloads them anew.
  sed -n 's/^  - \(.*\): expected .*/\1/p; s/^  - \([^:]*\)$/\1/p' "$logs/verify" \
    | while IFS= read -r path; do
        rm -f "$target/$path" "$target/.cache/huggingface/download/$path.metadata"
      done
  detail=$(grep -E '^  - ' "$logs/verify" | head -n3 | tr '\n' ' ' | cut -c1-300)
  fail __INCOMPLETE_CODE__ "__INCOMPLETE_MESSAGE__"
fi

read -r files bytes < <(find "$target" -path "$target/.cache" -prune -o -type f -printf '%s\n' \
  | awk '{ s += $1; n++ } END { print n + 0, s + 0 }')
sync -f "$target" 2>/dev/null || sync
{
  printf '{"model": "%s", "revision": "%s", "commit": "%s", ' "$model" "$revision" "$commit"
  printf '"files": %s, "bytes": %s, "stagedAt": "%s"}\n' "$files" "$bytes" \
    "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} 2>"$logs/marker" >"$marker.tmp" && mv "$marker.tmp" "$marker" 2>>"$logs/marker" \
  || classify "$logs/marker"
sync -f "$target" 2>/dev/null || sync
echo "staged $model@$commit: $files files, $bytes bytes"
"""


def staging_script() -> str:
    """The bash program of the staging container (inputs come from DARWIN_* variables)."""
    return (
        _SCRIPT.replace("__CLASSIFY__", _classify_function())
        .replace("__MARKER__", MARKER_NAME)
        .replace("__TERMINATION_LOG__", TERMINATION_LOG)
        .replace("__MAX_MESSAGE__", str(MAX_MESSAGE_CHARS))
        .replace("__INCOMPLETE_CODE__", str(_INCOMPLETE.exit_code))
        .replace("__INCOMPLETE_MESSAGE__", _INCOMPLETE.message)
    )


def _token_env(token_secret_ref: Any) -> list[dict]:
    """HF_TOKEN from model.tokenSecretRef (api.SecretKeyRef or a {"name", "key"} dict)."""
    if token_secret_ref is None:
        return []
    if isinstance(token_secret_ref, dict):
        name, key = token_secret_ref["name"], token_secret_ref.get("key", "token")
    else:
        name, key = token_secret_ref.name, token_secret_ref.key
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": name, "key": key}}}]


def staging_env(
    model_id: str,
    revision: str | None,
    cache_dir: str,
    token_secret_ref: Any,
    *,
    extra_env: list[dict] | None = None,
) -> list[dict]:
    """The staging container's environment: its inputs, then hf's settings, then the user's
    (engine.env: HF_ENDPOINT for a mirror, proxies), so a user's value wins where both set one."""
    env = [
        {"name": "DARWIN_MODEL", "value": model_id},
        {"name": "DARWIN_REVISION", "value": revision or DEFAULT_REVISION},
        {"name": "DARWIN_TARGET", "value": model_dir(cache_dir, model_id, revision)},
        {"name": "HF_HOME", "value": hf_home(cache_dir)},
        # The full traceback names hf's exception (RevisionNotFoundError, 401 Client Error ...),
        # which is what the script classifies; the token is redacted from hf's debug lines.
        {"name": "HF_DEBUG", "value": "1"},
        {"name": "HF_HUB_DISABLE_PROGRESS_BARS", "value": "1"},
        {"name": "HF_HUB_DISABLE_UPDATE_CHECK", "value": "1"},
        {"name": "HF_HUB_DISABLE_TELEMETRY", "value": "1"},
    ]
    return env + _token_env(token_secret_ref) + list(extra_env or [])


def _weights_mount(cache_dir: str) -> list[dict]:
    return [{"name": WEIGHTS_VOLUME, "mountPath": cache_dir}]


def staging_container(
    model_id: str,
    revision: str | None,
    cache_dir: str,
    token_secret_ref: Any,
    image: str,
    *,
    extra_env: list[dict] | None = None,
    resources: dict | None = None,
) -> dict:
    """The container (core/v1 Container as a dict) that stages model_id@revision into
    model_dir(cache_dir, ...) on the volume `weights`, which it mounts (writable) at cache_dir.

    token_secret_ref: model.tokenSecretRef (api.SecretKeyRef, a {"name", "key"} dict or None);
    extra_env: spec.engine.env (HF_ENDPOINT, proxies)."""
    container = {
        "name": CONTAINER_NAME,
        "image": image,
        "command": ["bash", "-c", staging_script()],
        "env": staging_env(model_id, revision, cache_dir, token_secret_ref, extra_env=extra_env),
        "volumeMounts": _weights_mount(cache_dir),
        "terminationMessagePath": TERMINATION_LOG,
        # A container killed before the script wrote its message still reports hf's last lines.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if resources is not None:
        container["resources"] = resources
    return container


# The marker goes first: a half-removed directory never looks staged.
_PRUNE_SCRIPT = """set -eu
rm -f "$DARWIN_TARGET/__MARKER__"
rm -rf "$DARWIN_TARGET"
rmdir "$(dirname "$DARWIN_TARGET")" 2>/dev/null || true
echo "removed $DARWIN_TARGET"
"""


def prune_container(model_id: str, revision: str | None, cache_dir: str, image: str) -> dict:
    """The container that removes one staged revision (exit 0 also when it is not there)."""
    return {
        "name": "prune",
        "image": image,
        "command": ["bash", "-c", _PRUNE_SCRIPT.replace("__MARKER__", MARKER_NAME)],
        "env": [{"name": "DARWIN_TARGET", "value": model_dir(cache_dir, model_id, revision)}],
        "volumeMounts": _weights_mount(cache_dir),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def parse_staging_failure(terminated: dict | None) -> tuple[str, str] | None:
    """(reason, message) for a terminated staging container (core/v1 ContainerStateTerminated,
    camelCase or snake_case keys), or None when it succeeded."""
    if not terminated:
        return None
    code = terminated.get("exitCode", terminated.get("exit_code"))
    if code == 0:
        return None
    text = " ".join(str(terminated.get("message") or "").split())[:MAX_MESSAGE_CHARS]
    failure = FAILURE_BY_CODE.get(code)
    if failure is not None:
        return failure.reason, text or f"staging failed with exit code {code} ({failure.reason})"
    kubelet_reason = terminated.get("reason") or ""
    if kubelet_reason == "OOMKilled":
        return "StagingOOMKilled", "the staging container ran out of memory; raise its limit"
    if code is not None and code > 128:
        return (
            "StagingInterrupted",
            f"the staging container was stopped by signal {code - 128}; a new run resumes"
            " with the files already downloaded",
        )
    return "StagingFailed", text or f"staging failed with exit code {code} ({kubelet_reason})"


def is_retryable(reason: str) -> bool:
    """Whether a failure may go away by itself (network, interruption), as opposed to one that
    needs the user (token, model or revision name, volume): the latter are not retried in a loop."""
    failure = FAILURE_BY_REASON.get(reason)
    if failure is not None:
        return failure.retryable
    return reason in ("StagingInterrupted", "StagingOOMKilled")
