# -*- coding: utf-8 -*-
# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Download or verify a Hugging Face snapshot in the standard cache layout, for the hf_model module.

The cache is the one huggingface_hub and vLLM read: ``CACHE/models--ORG--NAME/{blobs,snapshots/COMMIT,refs}``.
Online, the revision is resolved and the file list read from the hub, compared with what the cache holds,
the free space checked before any byte moves, then huggingface_hub's ``snapshot_download`` fetches what is
missing (pinned to the commit, so a branch moving mid-run cannot mix two commits). Offline, the snapshot is
checked against a manifest (the ``files`` an online run returned) without huggingface_hub or any network.

Nothing here imports Ansible: the module is a thin shell, and this file is unit-tested on its own.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import fnmatch
import hashlib
import os
import re
import shutil
import traceback
from typing import Any, Dict, Iterator, List, Optional, Tuple

try:
    from huggingface_hub import HfApi, constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import disable_progress_bars, filter_repo_objects
except ImportError:
    HAS_HUGGINGFACE_HUB = False
    HUGGINGFACE_HUB_IMPORT_ERROR = traceback.format_exc()  # type: Optional[str]
else:
    HAS_HUGGINGFACE_HUB = True
    HUGGINGFACE_HUB_IMPORT_ERROR = None

try:
    import httpx2
except ImportError:
    httpx2 = None
    # Connection and timeout errors of the client huggingface_hub uses (none to catch without it).
    TRANSPORT_ERRORS = ()  # type: Tuple[type, ...]
    HTTP_ERRORS = ()  # type: Tuple[type, ...]
else:
    TRANSPORT_ERRORS = (httpx2.ConnectError, httpx2.TimeoutException)
    HTTP_ERRORS = (httpx2.HTTPError,)

GB = 1000 ** 3  # decimal gigabytes, as df -H and disk vendors count
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
HASH_CHUNK = 4 * 1024 * 1024
TOKEN_VARIABLE = "model_hf_token"
CACHE_VARIABLES = "model_cache_dir (model_controller_cache_dir for the controller's copy)"


class HfModelError(Exception):
    """A failure the operator can act on; str() is the whole message."""


class RemoteFile:
    """One file of the snapshot as the hub lists it."""

    def __init__(self, path: str, size: int, blob_id: str, lfs_sha256: Optional[str] = None) -> None:
        self.path = path
        self.size = size
        self.blob_id = blob_id
        self.lfs_sha256 = lfs_sha256

    @property
    def etag(self) -> str:
        """Name of the blob in the cache: the sha256 of an LFS file, the git blob id of any other."""
        return self.lfs_sha256 or self.blob_id


# ---------------------------------------------------------------- cache layout and hashing

def repo_folder(cache_dir: str, repo_id: str) -> str:
    return os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))


def snapshot_folder(cache_dir: str, repo_id: str, commit_hash: str) -> str:
    return os.path.join(repo_folder(cache_dir, repo_id), "snapshots", commit_hash)


def snapshot_file(snapshot_path: str, repo_path: str) -> str:
    return os.path.join(snapshot_path, *repo_path.split("/"))


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_git_blob_id(path: str) -> str:
    """Git's object id of a file's content (what the hub reports for files not stored in LFS)."""
    digest = hashlib.sha1(b"blob %d\0" % os.path.getsize(path))  # noqa: S324 - git's id, not for security
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def local_size(path: str) -> Optional[int]:
    """Size of the file a snapshot entry resolves to; None when missing or a dangling link."""
    try:
        return os.stat(path).st_size
    except OSError:
        return None


def existing_ancestor(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def free_bytes(path: str) -> int:
    """Free bytes on the filesystem that holds path (or would, once created)."""
    return shutil.disk_usage(existing_ancestor(path)).free


def check_free_space(needed_bytes: int, cache_dir: str, margin_gb: float, what: str) -> None:
    if needed_bytes <= 0:
        return
    margin = int(margin_gb * GB)
    free = free_bytes(cache_dir)
    if needed_bytes + margin > free:
        raise HfModelError(
            "Not enough free space for %s: it needs %.2f GB (%.2f GB to download + %.2f GB margin) and the "
            "filesystem holding %s has %.2f GB free. Free space there, or set %s to a directory on a larger "
            "filesystem (free_space_margin_gb sets the margin)."
            % (what, (needed_bytes + margin) / GB, needed_bytes / GB, margin / GB, existing_ancestor(cache_dir),
               free / GB, CACHE_VARIABLES)
        )


def read_ref(cache_dir: str, repo_id: str, revision: str) -> Optional[str]:
    try:
        with open(os.path.join(repo_folder(cache_dir, repo_id), "refs", revision)) as handle:
            return handle.read().strip()
    except OSError:
        return None


def write_ref(cache_dir: str, repo_id: str, revision: str, commit_hash: str) -> bool:
    """Point refs/REVISION at the commit, as huggingface_hub does (atomically); True when it changed."""
    if revision == commit_hash or read_ref(cache_dir, repo_id, revision) == commit_hash:
        return False
    ref_path = os.path.join(repo_folder(cache_dir, repo_id), "refs", revision)
    if not os.path.isdir(os.path.dirname(ref_path)):
        os.makedirs(os.path.dirname(ref_path))
    temporary = "%s.%d.tmp" % (ref_path, os.getpid())
    with open(temporary, "w") as handle:
        handle.write(commit_hash)
    os.replace(temporary, ref_path)
    return True


# ---------------------------------------------------------------- offline verification

def verify_offline(
    repo_id: str, revision: str, cache_dir: str, *, commit_hash: Optional[str], manifest: List[Dict[str, Any]],
    verify_checksums: bool,
) -> Dict[str, Any]:
    """Check the snapshot against a manifest of {path, size, sha256}; no network, no huggingface_hub."""
    if not COMMIT_RE.match(commit_hash or ""):
        raise HfModelError("commit_hash must be a commit sha (40 hex digits), got %r" % (commit_hash,))
    snapshot_path = snapshot_folder(cache_dir, repo_id, commit_hash)
    if not os.path.isdir(snapshot_path):
        raise HfModelError(
            "No snapshot of %s at commit %s in %s (looked for %s): copy it from the controller or run hf_model "
            "without offline to download it." % (repo_id, commit_hash, cache_dir, snapshot_path)
        )
    if not COMMIT_RE.match(revision):
        ref = read_ref(cache_dir, repo_id, revision)
        if ref != commit_hash:
            raise HfModelError(
                "%s: refs/%s in %s points at %s, not at commit %s, so a loader asking for revision %s would not "
                "find this snapshot. Copy the refs directory from the controller, or pass the commit sha as the "
                "revision." % (repo_id, revision, repo_folder(cache_dir, repo_id), ref or "nothing", commit_hash,
                               revision)
            )
    problems = []  # type: List[str]
    files = []  # type: List[Dict[str, Any]]
    for entry in manifest:
        path, size, sha256 = entry.get("path"), entry.get("size"), entry.get("sha256")
        if not path or size is None:
            raise HfModelError("Every manifest entry needs path and size (as hf_model returns in files): %r" % entry)
        local_path = snapshot_file(snapshot_path, path)
        found = local_size(local_path)
        if found is None:
            problems.append("%s is missing" % path)
            continue
        if found != int(size):
            problems.append("%s has %d bytes, the manifest says %d" % (path, found, int(size)))
            continue
        if verify_checksums:
            actual = file_sha256(local_path)
            if sha256 and actual != sha256:
                problems.append("%s has sha256 %s, the manifest says %s" % (path, actual, sha256))
                continue
            sha256 = actual
        files.append({"path": path, "size": int(size), "sha256": sha256})
    if problems:
        raise HfModelError(
            "The snapshot of %s at commit %s in %s does not match the manifest: %s. Copy it again from the "
            "controller (or rerun hf_model online, which replaces damaged files)."
            % (repo_id, commit_hash, snapshot_path, "; ".join(problems))
        )
    return result_dict(commit_hash, snapshot_path, files, fetched=[], would_fetch=[], bytes_fetched=0)


def result_dict(
    commit_hash: str, snapshot_path: str, files: List[Dict[str, Any]], *, fetched: List[str], would_fetch: List[str],
    bytes_fetched: int, changed: bool = False,
) -> Dict[str, Any]:
    return {
        "changed": changed,
        "commit_hash": commit_hash,
        "snapshot_path": snapshot_path,
        "files": files,
        "bytes_total": sum(entry["size"] for entry in files),
        "fetched": fetched,
        "bytes_fetched": bytes_fetched,
        "would_fetch": would_fetch,
    }


# ---------------------------------------------------------------- online

def hub_endpoint(endpoint: Optional[str]) -> str:
    return (endpoint or constants.ENDPOINT).rstrip("/")


def describe_hub_error(error: Exception, repo_id: str, revision: str, endpoint: str) -> str:
    """The operator's version of an error huggingface_hub or httpx2 raised."""
    where = "%s@%s from %s" % (repo_id, revision, endpoint)
    status = None
    if isinstance(error, HfHubHTTPError) and getattr(error, "response", None) is not None:
        status = error.response.status_code
    if isinstance(error, RevisionNotFoundError):
        return ("Revision %s not found in %s at %s: use a commit sha or branch that exists there (the repo's "
                "'Files and versions' page lists them)." % (revision, repo_id, endpoint))
    if isinstance(error, GatedRepoError):
        return ("%s is gated: %s refuses it. Accept its license on the hub with the account whose token is in %s."
                % (repo_id, endpoint, TOKEN_VARIABLE))
    if status == 401:
        return ("The hub at %s answered 401 Unauthorized for %s: the token is missing or wrong (private or gated "
                "repos, and unknown ones, answer 401 without a valid token). Set %s to a token that can read the "
                "repo." % (endpoint, repo_id, TOKEN_VARIABLE))
    if status == 403:
        return ("The hub at %s answered 403 Forbidden for %s: the token in %s may not read this repo (a "
                "fine-grained token needs read access to it)." % (endpoint, repo_id, TOKEN_VARIABLE))
    if isinstance(error, RepositoryNotFoundError) or status == 404:
        return ("Repository %s not found at %s (404): check repo_id (ORG/NAME, as on the hub's page) and the "
                "endpoint." % (repo_id, endpoint))
    if isinstance(error, OfflineModeIsEnabled):
        return ("HF_HUB_OFFLINE is set in the environment of the task, so huggingface_hub refuses to reach %s for "
                "%s: unset it, or use offline: true with a manifest." % (endpoint, where))
    if httpx2 is not None and isinstance(error, httpx2.ConnectError):
        return ("Cannot connect to the hub at %s for %s (%s): check the endpoint option (model_hf_endpoint, or "
                "HF_ENDPOINT), that it is up, and the network or proxy in between." % (endpoint, where, error))
    if httpx2 is not None and isinstance(error, httpx2.TimeoutException):
        return ("The hub at %s did not answer in time for %s (%s): raise timeout, or check the network."
                % (endpoint, where, error))
    if isinstance(error, LocalEntryNotFoundError):
        return ("The download of %s stopped: the hub at %s could not be reached or did not answer (%s)."
                % (where, endpoint, error))
    if status is not None:
        return "The hub at %s answered %d for %s: %s" % (endpoint, status, where, error)
    return "Downloading %s failed: %s: %s" % (where, type(error).__name__, error)


@contextlib.contextmanager
def download_timeout(seconds: Optional[int]) -> Iterator[None]:
    """huggingface_hub reads its per-read download timeout from a module constant; set it for this call."""
    if not seconds:
        yield
        return
    saved = constants.HF_HUB_DOWNLOAD_TIMEOUT
    constants.HF_HUB_DOWNLOAD_TIMEOUT = seconds
    try:
        yield
    finally:
        constants.HF_HUB_DOWNLOAD_TIMEOUT = saved


def remote_snapshot(
    api: Any, repo_id: str, revision: str, timeout: Optional[int]
) -> Tuple[str, List[RemoteFile]]:
    """Resolve the revision to a commit and list every file of it (recursively)."""
    # Asked for a commit sha too: one quick request (no retries) that fails clearly on a bad repo, token or sha.
    commit_hash = api.model_info(repo_id, revision=revision, timeout=timeout).sha
    files = []
    for item in api.list_repo_tree(repo_id, recursive=True, revision=commit_hash):
        if hasattr(item, "blob_id"):  # RepoFile; RepoFolder entries have tree_id
            lfs = getattr(item, "lfs", None)
            files.append(RemoteFile(item.path, item.size, item.blob_id, lfs.sha256 if lfs is not None else None))
    return commit_hash, files


def needs_fetch(remote: RemoteFile, local_path: str, verify_checksums: bool) -> Optional[str]:
    """Why the cached copy of a file must be fetched, or None when it is good."""
    found = local_size(local_path)
    if found is None:
        return "missing"
    if found != remote.size:
        return "has %d bytes, the hub says %d" % (found, remote.size)
    if verify_checksums and not content_matches(remote, local_path):
        return "content differs from the hub's checksum"
    return None


def content_matches(remote: RemoteFile, path: str) -> bool:
    if remote.lfs_sha256:
        return file_sha256(path) == remote.lfs_sha256
    return file_git_blob_id(path) == remote.blob_id


def discard_damaged(local_path: str, blob_path: str) -> None:
    """Remove a damaged snapshot entry and its blob, so that snapshot_download fetches them again."""
    for path in (local_path, blob_path):
        if os.path.lexists(path):
            os.remove(path)


def sync_snapshot(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """The online path of hf_model: resolve, compare, check space, fetch, verify."""
    repo_id, revision, cache_dir = params["repo_id"], params["revision"], params["cache_dir"]
    endpoint = hub_endpoint(params.get("endpoint"))
    timeout = params.get("timeout")
    verify_checksums = bool(params.get("verify_checksums"))
    api = HfApi(endpoint=endpoint, token=params.get("token"))
    try:
        commit_hash, remote_files = remote_snapshot(api, repo_id, revision, timeout)
    except (HfHubHTTPError, OfflineModeIsEnabled) + TRANSPORT_ERRORS as error:
        raise HfModelError(describe_hub_error(error, repo_id, revision, endpoint)) from error
    allow, ignore = params.get("allow_patterns"), params.get("ignore_patterns")
    wanted = list(filter_repo_objects(remote_files, allow_patterns=allow, ignore_patterns=ignore,
                                      key=lambda remote: remote.path))
    if not wanted:
        raise HfModelError(
            "No file of %s at commit %s matches allow_patterns %s / ignore_patterns %s; the repo holds: %s"
            % (repo_id, commit_hash, allow, ignore, ", ".join(sorted(f.path for f in remote_files)) or "nothing")
        )
    storage = repo_folder(cache_dir, repo_id)
    snapshot_path = snapshot_folder(cache_dir, repo_id, commit_hash)
    to_fetch = []  # type: List[Tuple[RemoteFile, str]]
    for remote in wanted:
        reason = needs_fetch(remote, snapshot_file(snapshot_path, remote.path), verify_checksums)
        if reason is not None:
            to_fetch.append((remote, reason))
    blob_of = {remote.path: os.path.join(storage, "blobs", remote.etag) for remote in wanted}
    # A blob already in the cache (another commit shares the file) is linked, not downloaded.
    download_bytes = sum(
        remote.size for remote, reason in to_fetch if reason != "missing" or local_size(blob_of[remote.path]) is None
    )
    ref_changes = not COMMIT_RE.match(revision) and read_ref(cache_dir, repo_id, revision) != commit_hash
    check_free_space(download_bytes, cache_dir, float(params.get("free_space_margin_gb", 2)),
                     "%s at commit %s" % (repo_id, commit_hash))

    fetch_paths = [remote.path for remote, _reason in to_fetch]
    if check_mode:
        files = [manifest_entry(remote, snapshot_path, hash_local=remote.path not in fetch_paths)
                 for remote in wanted]
        return result_dict(commit_hash, snapshot_path, files, fetched=[], would_fetch=fetch_paths, bytes_fetched=0,
                           changed=bool(fetch_paths) or ref_changes)

    warnings = []
    fetched_bytes = 0
    fetched = []  # type: List[str]
    if to_fetch:
        for remote, reason in to_fetch:
            if reason != "missing":
                warnings.append("%s: %s; fetching it again" % (remote.path, reason))
                discard_damaged(snapshot_file(snapshot_path, remote.path), blob_of[remote.path])
        blobs_before = {path for path in fetch_paths if local_size(blob_of[path]) is not None}
        disable_progress_bars()
        try:
            with download_timeout(timeout):
                snapshot_download(
                    repo_id, revision=commit_hash, cache_dir=cache_dir, endpoint=endpoint, token=params.get("token"),
                    allow_patterns=allow, ignore_patterns=ignore,
                    etag_timeout=timeout or constants.DEFAULT_ETAG_TIMEOUT,
                )
        except (HfHubHTTPError, OfflineModeIsEnabled, LocalEntryNotFoundError) + HTTP_ERRORS as error:
            raise HfModelError(describe_hub_error(error, repo_id, commit_hash, endpoint)) from error
        except OSError as error:  # disk full, permissions, a size that does not match after retries
            raise HfModelError("Downloading %s at commit %s into %s failed: %s"
                               % (repo_id, commit_hash, cache_dir, error)) from error
        fetched = [path for path in fetch_paths if path not in blobs_before]
        fetched_bytes = sum(remote.size for remote, _reason in to_fetch if remote.path in fetched)
        verify_fetched([remote for remote, _reason in to_fetch], snapshot_path, blob_of, repo_id, commit_hash)
    ref_written = write_ref(cache_dir, repo_id, revision, commit_hash) if not COMMIT_RE.match(revision) else False
    files = [manifest_entry(remote, snapshot_path, hash_local=True) for remote in wanted]
    result = result_dict(commit_hash, snapshot_path, files, fetched=fetched, would_fetch=[],
                         bytes_fetched=fetched_bytes, changed=bool(fetch_paths) or ref_written)
    result["warnings"] = warnings
    return result


def verify_fetched(
    fetched: List[RemoteFile], snapshot_path: str, blob_of: Dict[str, str], repo_id: str, commit_hash: str
) -> None:
    """Every file this run brought in must match the hub's size and checksum; a bad one is removed."""
    bad = []
    for remote in fetched:
        local_path = snapshot_file(snapshot_path, remote.path)
        found = local_size(local_path)
        if found != remote.size or not content_matches(remote, local_path):
            discard_damaged(local_path, blob_of[remote.path])
            bad.append("%s (%s bytes, expected %d)" % (remote.path, found, remote.size))
    if bad:
        raise HfModelError(
            "Files of %s at commit %s arrived damaged and were removed: %s. Run again; if it repeats, check the "
            "endpoint (a mirror serving stale files?) and the disk." % (repo_id, commit_hash, ", ".join(bad))
        )


def manifest_entry(remote: RemoteFile, snapshot_path: str, hash_local: bool) -> Dict[str, Any]:
    """{path, size, sha256} for the files list: the hub's sha256 for LFS files, else hashed here (small files).

    hash_local is false for a file that is not (yet) good on disk: in check mode a missing file that is not in
    LFS has no sha256 to report, so null.
    """
    sha256 = remote.lfs_sha256
    local_path = snapshot_file(snapshot_path, remote.path)
    if sha256 is None and hash_local and local_size(local_path) is not None:
        sha256 = file_sha256(local_path)
    return {"path": remote.path, "size": remote.size, "sha256": sha256}


def offline_pattern_match(
    path: str, allow_patterns: Optional[List[str]], ignore_patterns: Optional[List[str]]
) -> bool:
    """huggingface_hub's filter_repo_objects rule, for code that must run without it."""
    def expand(pattern: str) -> str:
        pattern = pattern.replace("\\", "/")
        return pattern + "*" if pattern.endswith("/") else pattern

    if allow_patterns and not any(fnmatch.fnmatchcase(path, expand(p)) for p in allow_patterns):
        return False
    return not (ignore_patterns and any(fnmatch.fnmatchcase(path, expand(p)) for p in ignore_patterns))


def run(params: Dict[str, Any], check_mode: bool) -> Dict[str, Any]:
    """hf_model's work: returns the module result; raises HfModelError with the operator's message."""
    if params.get("offline"):
        manifest = params.get("manifest") or []
        allow, ignore = params.get("allow_patterns"), params.get("ignore_patterns")
        if allow or ignore:
            manifest = [entry for entry in manifest if offline_pattern_match(entry.get("path", ""), allow, ignore)]
        return verify_offline(params["repo_id"], params["revision"], params["cache_dir"],
                              commit_hash=params.get("commit_hash"), manifest=manifest,
                              verify_checksums=bool(params.get("verify_checksums")))
    return sync_snapshot(params, check_mode)
