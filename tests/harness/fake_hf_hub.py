# Copyright: llmfleet.workstation contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A stand-in for the Hugging Face Hub, enough for huggingface_hub's snapshot_download, hf_hub_download and
model_info (checked against huggingface_hub 2.4.0). Standard library only, so it runs in any Python 3.8+.

    python3 tests/harness/fake_hf_hub.py --repo ORG/NAME=DIR [--repo ...] [--port 0] [--port-file F]
        [--pid-file F] [--log F] [--token T] [--max-seconds 1800] [--fail-after-bytes N] [--lfs GLOB ...]

Each repo is a directory served as one commit on branch main; the commit sha (40 hex) is derived from the files'
paths and git blob ids, so the same content always gets the same sha. Files matching --lfs (default *.safetensors,
*.bin, *.gguf, *.pt, *.pth, *.onnx, *.msgpack, *.h5) are described as Git LFS files, the others as plain git blobs.

Endpoints (what the client library calls):
  GET  /api/models/ORG/NAME[/revision/REV][?blobs=true]     repo info: sha, siblings (+ size, blobId, lfs)
  GET  /api/models/ORG/NAME/tree/REV[/PATH][?recursive=true] files and folders
  HEAD /ORG/NAME/resolve/REV/PATH                           X-Repo-Commit, ETag, X-Linked-Etag/-Size, length
  GET  /ORG/NAME/resolve/REV/PATH                           the file; `Range: bytes=N-` (or N-M) gets 206
REV is a branch (main) or the commit sha. Errors carry the hub's X-Error-Code/X-Error-Message headers:
unknown repo 404 RepoNotFound, unknown revision 404 RevisionNotFound, unknown file 404 EntryNotFound.
With --token, a request without `Authorization: Bearer T` gets 401 as the hub answers it (no token: RepoNotFound,
"Invalid username or password."; another token: "Invalid credentials in Authorization header").

Every file body sent (GET resolve) appends one JSON line to --log: method, path, range, status, bytes, aborted.
--fail-after-bytes N aborts the first body longer than N after N bytes (once), to test resumed downloads.
Binds 127.0.0.1 only; --port 0 picks a free port, written to --port-file once the server listens.
Stops after --max-seconds (default 1800), on SIGTERM or SIGINT.
"""

import argparse
import contextlib
import fnmatch
import hashlib
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_LFS = ["*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth", "*.onnx", "*.msgpack", "*.h5"]
CHUNK = 64 * 1024
LAST_MODIFIED = "2026-01-01T00:00:00.000Z"
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n"


def git_blob_id(data_size, chunks):
    digest = hashlib.sha1(b"blob %d\0" % data_size)  # noqa: S324 - git's object id, not a security hash
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def read_chunks(path):
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(1024 * 1024)
            if not chunk:
                return
            yield chunk


class RepoFileEntry:
    """One file of a served repo, with the ids the hub reports for it."""

    def __init__(self, root, relative, lfs_globs):
        self.path = relative
        self.disk_path = root / relative
        self.size = self.disk_path.stat().st_size
        self.sha256 = hashlib.sha256()
        for chunk in read_chunks(self.disk_path):
            self.sha256.update(chunk)
        self.sha256 = self.sha256.hexdigest()
        self.is_lfs = any(fnmatch.fnmatchcase(relative.rsplit("/", 1)[-1], glob) for glob in lfs_globs)
        if self.is_lfs:
            pointer = (LFS_POINTER % (self.sha256, self.size)).encode()
            self.pointer_size = len(pointer)
            self.blob_id = git_blob_id(len(pointer), [pointer])  # git stores the pointer, not the content
        else:
            self.pointer_size = None
            self.blob_id = git_blob_id(self.size, read_chunks(self.disk_path))

    @property
    def etag(self):
        """What the hub puts in ETag: the sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.is_lfs else self.blob_id

    def tree_entry(self):
        entry = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.is_lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return entry

    def sibling(self, blobs):
        sibling = {"rfilename": self.path}
        if blobs:
            sibling.update(size=self.size, blobId=self.blob_id)
            if self.is_lfs:
                sibling["lfs"] = {"sha256": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return sibling


class Repo:
    def __init__(self, repo_id, root, lfs_globs):
        self.repo_id = repo_id
        root = Path(root).resolve()
        if not root.is_dir():
            raise SystemExit("fake_hf_hub: %s is not a directory" % root)
        relatives = sorted(
            path.relative_to(root).as_posix() for path in root.rglob("*")
            if path.is_file() and ".git" not in path.relative_to(root).parts
        )
        self.files = {relative: RepoFileEntry(root, relative, lfs_globs) for relative in relatives}
        listing = "".join("%s %s %d\n" % (f.path, f.blob_id, f.size) for f in self.files.values())
        self.commit = hashlib.sha1(("%s\n%s" % (repo_id, listing)).encode()).hexdigest()  # noqa: S324
        self.branches = {"main": self.commit}

    def resolve(self, revision):
        if revision == self.commit:
            return self.commit
        return self.branches.get(revision)

    def folders(self):
        names = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                names.add("/".join(parts[:depth]))
        return names

    def tree(self, folder, recursive):
        prefix = folder + "/" if folder else ""
        entries = []
        for name in sorted(self.folders()):
            if name.startswith(prefix) and (recursive or "/" not in name[len(prefix):]):
                oid = hashlib.sha1(("tree %s %s" % (self.commit, name)).encode()).hexdigest()  # noqa: S324
                entries.append({"type": "directory", "oid": oid, "size": 0, "path": name})
        for path, entry in self.files.items():
            if path.startswith(prefix) and (recursive or "/" not in path[len(prefix):]):
                entries.append(entry.tree_entry())
        return entries

    def info(self, blobs):
        org = self.repo_id.split("/")[0]
        return {
            "_id": self.commit[:24],
            "id": self.repo_id,
            "modelId": self.repo_id,
            "author": org,
            "sha": self.commit,
            "lastModified": LAST_MODIFIED,
            "createdAt": LAST_MODIFIED,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": ["llama", "text-generation"],
            "pipeline_tag": "text-generation",
            "library_name": "transformers",
            "siblings": [entry.sibling(blobs) for entry in self.files.values()],
        }


class HubState:
    """What the handler threads share: repos, settings, the log and the one-shot failure."""

    def __init__(self, repos, token, log_path, fail_after_bytes):
        self.repos = repos
        self.token = token
        self.log_path = log_path
        self.fail_after_bytes = fail_after_bytes
        self.lock = threading.Lock()
        self.bytes_sent = 0

    def take_failure(self, body_length):
        """--fail-after-bytes for the first body longer than it (once), else None."""
        with self.lock:
            limit = self.fail_after_bytes
            if limit is None or body_length <= limit:
                return None
            self.fail_after_bytes = None
            return limit

    def log(self, record):
        with self.lock:
            self.bytes_sent += record["bytes"]
            if self.log_path:
                with open(self.log_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record, sort_keys=True) + "\n")


class HubError(Exception):
    def __init__(self, status, message, code=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-hf-hub/1.0"
    state = None  # set on the subclass made by serve()

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass  # quiet: the body log is the record that tests read

    # ---- routing ----
    def do_GET(self):
        self.handle_request(head=False)

    def do_HEAD(self):
        self.handle_request(head=True)

    def handle_request(self, head):
        url = urlsplit(self.path)
        segments = [unquote(part) for part in url.path.split("/")[1:]]
        query = parse_qs(url.query)
        try:
            self.check_token()
            if segments[:2] == ["api", "models"] and len(segments) >= 4:
                repo = self.find_repo(segments[2], segments[3])
                rest = segments[4:]
                if not rest:
                    self.send_json(repo.info(self.flag(query, "blobs")), repo, head)
                elif rest[0] == "revision" and len(rest) == 2:
                    self.resolve_revision(repo, rest[1])
                    self.send_json(repo.info(self.flag(query, "blobs")), repo, head)
                elif rest[0] == "tree" and len(rest) >= 2:
                    self.resolve_revision(repo, rest[1])
                    folder = "/".join(rest[2:]).strip("/")
                    if folder and folder not in repo.folders():
                        raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": repo.commit})
                    self.send_json(repo.tree(folder, self.flag(query, "recursive")), repo, head)
                else:
                    raise HubError(404, "Sorry, we can't find the page you are looking for.")
            elif len(segments) >= 5 and segments[2] == "resolve":
                repo = self.find_repo(segments[0], segments[1])
                commit = self.resolve_revision(repo, segments[3])
                entry = repo.files.get("/".join(segments[4:]))
                if entry is None:
                    raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit})
                self.send_file(entry, commit, head)
            else:
                raise HubError(404, "Sorry, we can't find the page you are looking for.")
        except HubError as error:
            self.send_error_response(error, head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    @staticmethod
    def flag(query, name):
        return query.get(name, ["false"])[-1].lower() in ("1", "true", "yes")

    def check_token(self):
        token = self.state.token
        if token is None:
            return
        header = self.headers.get("Authorization")
        if header is None:
            raise HubError(401, "Invalid username or password.", "RepoNotFound")
        if header != "Bearer %s" % token:
            raise HubError(401, "Invalid credentials in Authorization header")

    def find_repo(self, org, name):
        repo = self.state.repos.get("%s/%s" % (org, name))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        return repo

    @staticmethod
    def resolve_revision(repo, revision):
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, "Invalid rev id: %s" % revision, "RevisionNotFound")
        return commit

    # ---- answers ----
    def send_json(self, data, repo, head):
        body = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Repo-Commit", repo.commit)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def send_error_response(self, error, head):
        body = json.dumps({"error": error.message}).encode()
        self.send_response(error.status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if error.code:
            self.send_header("X-Error-Code", error.code)
        self.send_header("X-Error-Message", error.message)
        for name, value in error.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def parse_range(self, size):
        """(start, end) inclusive for a `Range: bytes=N-[M]` header; None for the whole file."""
        header = self.headers.get("Range")
        if not header:
            return None
        try:
            unit, spec = header.strip().split("=", 1)
            first, last = spec.split(",")[0].strip().split("-", 1)
            if unit.strip() != "bytes" or not first:
                raise ValueError(header)
            start = int(first)
            end = min(int(last), size - 1) if last else size - 1
        except ValueError:
            return None  # a range we do not understand: the whole file, as a server may answer
        if start >= size or end < start:
            raise HubError(416, "Requested range not satisfiable", headers={"Content-Range": "bytes */%d" % size})
        return start, end

    def send_file(self, entry, commit, head):
        byte_range = None if head else self.parse_range(entry.size)
        start, end = byte_range if byte_range else (0, entry.size - 1)
        length = end - start + 1 if entry.size else 0
        self.send_response(206 if byte_range else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", '"%s"' % entry.etag)
        if entry.is_lfs:
            self.send_header("X-Linked-Etag", '"%s"' % entry.sha256)
            self.send_header("X-Linked-Size", str(entry.size))
        if byte_range:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, entry.size))
        self.end_headers()
        if head:
            return
        abort_at = self.state.take_failure(length)
        sent = 0
        try:
            with open(entry.disk_path, "rb") as handle:
                handle.seek(start)
                while sent < length:
                    want = min(CHUNK, length - sent)
                    if abort_at is not None:
                        want = min(want, abort_at - sent)
                        if want <= 0:
                            break
                    chunk = handle.read(want)
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    sent += len(chunk)
            self.wfile.flush()
        finally:
            aborted = sent < length
            self.state.log({
                "method": "GET", "path": urlsplit(self.path).path, "range": self.headers.get("Range"),
                "status": 206 if byte_range else 200, "bytes": sent, "aborted": aborted, "time": time.time(),
            })
            if aborted:
                self.close_connection = True  # the client sees a body shorter than Content-Length


def write_atomically(path, text):
    temporary = "%s.%d.tmp" % (path, os.getpid())
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="A stand-in for the Hugging Face Hub (see the module docstring).")
    parser.add_argument("--repo", action="append", required=True, metavar="ORG/NAME=DIR",
                        help="serve DIR as repo ORG/NAME (repeatable)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--pid-file", help="write the process id here")
    parser.add_argument("--log", help="append one JSON line per file body sent")
    parser.add_argument("--token", help="require Authorization: Bearer TOKEN on every request")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="stop after this long (default 1800)")
    parser.add_argument("--fail-after-bytes", type=int, help="abort the first body longer than N after N bytes")
    parser.add_argument("--lfs", action="append", metavar="GLOB",
                        help="file names served as Git LFS files (repeatable; default: %s)" % " ".join(DEFAULT_LFS))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    repos = {}
    for spec in args.repo:
        repo_id, separator, directory = spec.partition("=")
        if not separator or repo_id.count("/") != 1:
            raise SystemExit("fake_hf_hub: --repo wants ORG/NAME=DIR, got %r" % spec)
        repos[repo_id] = Repo(repo_id, directory, args.lfs or DEFAULT_LFS)
    handler = type("Handler", (HubHandler,), {"state": HubState(repos, args.token, args.log, args.fail_after_bytes)})
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler)
    server.daemon_threads = True
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.pid_file:
        write_atomically(args.pid_file, "%d\n" % os.getpid())
    port = server.server_address[1]
    if args.port_file:
        write_atomically(args.port_file, "%d\n" % port)
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    serving.start()
    sys.stderr.write("fake_hf_hub: http://127.0.0.1:%d serving %s\n" % (port, ", ".join(
        "%s@%s" % (repo_id, repo.commit) for repo_id, repo in repos.items())))
    sys.stderr.flush()
    stop.wait(args.max_seconds)
    server.shutdown()
    server.server_close()
    if args.pid_file:
        with contextlib.suppress(OSError):
            os.unlink(args.pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
