"""A small Hugging Face Hub on 127.0.0.1 for tests: enough of the Hub's HTTP API for the real
`huggingface_hub` client (and so transformers, datasets and lm-eval) to create repos and branches,
upload (preupload, LFS batch, LFS upload and verify, ndjson commit) and read back (repo info,
refs, tree, paths-info, resolve/download) — with HF_ENDPOINT pointing here and HF_HUB_DISABLE_XET=1.

Nothing is canned: uploaded files are stored by SHA-256 and served back from that store; commits
are snapshots of a repo's files; a write needs a known token and a private repo is invisible
without one (401, as the Hub answers). Endpoints follow huggingface_hub 2.4's client code
(`hf_api.py`, `_commit_api.py`, `lfs.py`, `file_download.py`). Every request is logged in
`HubServer.requests` so a test can read what the client did.

    with HubServer(tmp_path / "hub", tokens={"hf_xxx": "alice"}) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n"
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".parquet", ".arrow",
                ".zip", ".gz", ".tar", ".npy", ".npz", ".pkl", ".pickle", ".model")
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class StoredFile:
    sha256: str
    size: int
    lfs: bool

    @property
    def oid(self) -> str:
        """The git oid the Hub reports: of the content, or of the LFS pointer for LFS files."""
        if self.lfs:
            return git_blob_oid(LFS_POINTER.format(sha=self.sha256, size=self.size).encode())
        return self._content_oid

    _content_oid: str = ""


@dataclass
class Commit:
    oid: str
    parent: str | None
    files: dict[str, StoredFile]
    title: str
    date: str


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    owner: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        oid = self.branches.get(revision, revision)
        return self.commits.get(oid)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, **body):
        super().__init__(message)
        self.status, self.message, self.code, self.body = status, message, code, body


class HubServer:
    """The Hub's state (repos, blobs on disk) and a threaded HTTP server in front of it."""

    def __init__(self, root: str | Path, tokens: dict[str, str]):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens)  # token → user name
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, user)
        self.lock = threading.RLock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # --- storage ---------------------------------------------------------------------------
    def blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def store(self, content: bytes) -> str:
        sha = hashlib.sha256(content).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(content)
            tmp.replace(path)
        return sha

    def stored_file(self, content: bytes, lfs: bool) -> StoredFile:
        return StoredFile(sha256=self.store(content), size=len(content), lfs=lfs, _content_oid=git_blob_oid(content))

    def file_bytes(self, repo_type: str, repo_id: str, revision: str, path: str) -> bytes:
        """What a repo holds at a path (for tests' own checks)."""
        commit = self.repos[(repo_type, repo_id)].resolve(revision)
        return self.blob_path(commit.files[path].sha256).read_bytes()

    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, StoredFile], title: str) -> Commit:
        listing = sorted((p, f.sha256, f.lfs) for p, f in files.items())
        oid = hashlib.sha1(json.dumps([parent, listing, title, len(repo.commits)]).encode()).hexdigest()
        commit = Commit(oid, parent, dict(files), title, time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()))
        repo.commits[oid] = commit
        return commit


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


REPO_API = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)(?:/(.*))?$")
LFS_BATCH = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$")
RESOLVE = re.compile(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


class _HubHandler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output clean; requests are in hub.requests
        pass

    # --- plumbing ----------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if token is not None and token not in self.hub.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.tokens.get(token) if token else None

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode())

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        try:
            user = self._user()
            with self.hub.lock:
                self.hub.requests.append((self.command, path, user))
            self._route(path, query, user)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, json.dumps({"error": err.message, **err.body}).encode(), headers)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _dispatch

    # --- routing -----------------------------------------------------------------------------
    def _route(self, path: str, query: dict, user: str | None) -> None:
        method = self.command
        if path == "/api/whoami-v2" and method == "GET":
            if user is None:
                raise HubError(401, "Invalid username or password.")
            return self._json({"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token"}})
        if path == "/api/repos/create" and method == "POST":
            return self._create_repo(json.loads(self._body()), user)
        if path == "/api/validate-yaml" and method == "POST":
            return self._validate_yaml(json.loads(self._body()))
        if path.startswith("/lfs-upload/") and method == "PUT":
            return self._lfs_upload(path.rsplit("/", 1)[1])
        if path == "/lfs-verify" and method == "POST":
            return self._lfs_verify(json.loads(self._body()))
        if m := LFS_BATCH.match(path):
            if method != "POST":
                raise HubError(405, "method not allowed")
            repo = self._repo(m.group(1) or "models", m.group(2), user, write=True)
            return self._lfs_batch(repo, json.loads(self._body()))
        if m := RESOLVE.match(path):
            repo = self._repo(m.group(1) or "models", m.group(2), user)
            return self._resolve(repo, unquote(m.group(3)), unquote(m.group(4)))
        if m := REPO_API.match(path):
            return self._repo_api(m.group(1), m.group(2), m.group(3) or "", query, user)
        raise HubError(404, f"no such endpoint: {method} {path}")

    def _repo(self, type_plural: str, repo_id: str, user: str | None, write: bool = False) -> Repo:
        repo = self.hub.repos.get((type_plural[:-1], repo_id))
        if repo is None or (repo.private and user != repo.owner):
            # The Hub does not tell a private repo from a missing one.
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        if write and user != repo.owner:
            raise HubError(403, "You don't have the rights to write to this repo")
        return repo

    def _repo_api(self, type_plural: str, repo_id: str, rest: str, query: dict, user: str | None) -> None:
        method = self.command
        write = method in ("POST", "PUT", "DELETE") and not rest.startswith("paths-info/")
        if write and user is None:
            raise HubError(401, "Authorization header is required for writes")
        repo = self._repo(type_plural, repo_id, user, write=write)
        head, _, tail = rest.partition("/")
        if rest == "" or head == "revision":
            return self._info(repo, unquote(tail) if tail else "main")
        if head == "refs" and method == "GET":
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()]
            return self._json({"branches": branches, "tags": [], "converts": [], "pullRequests": []})
        if head == "branch" and method == "POST":
            return self._create_branch(repo, unquote(tail), json.loads(self._body() or b"{}"))
        if head == "preupload" and method == "POST":
            return self._preupload(repo, unquote(tail), json.loads(self._body()))
        if head == "commit" and method == "POST":
            if query.get("create_pr"):
                raise HubError(400, "pull requests are not supported by this test Hub")
            return self._commit(repo, unquote(tail), self._body())
        if head == "tree" and method == "GET":
            revision, _, sub = tail.partition("/")
            return self._tree(repo, unquote(revision), unquote(sub), query.get("recursive", ["False"])[0] == "True")
        if head == "paths-info" and method == "POST":
            form = parse_qs(self._body().decode())
            return self._paths_info(repo, unquote(tail), form.get("paths", []))
        raise HubError(404, f"no such endpoint: {method} /api/{type_plural}/{repo_id}/{rest}")

    # --- endpoints ---------------------------------------------------------------------------
    def _create_repo(self, payload: dict, user: str | None) -> None:
        if user is None:
            raise HubError(401, "You must be authenticated to create a repo")
        namespace = payload.get("organization") or user
        if namespace != user:
            raise HubError(403, f"You don't have the rights to create a repo under the namespace '{namespace}'")
        repo_type = payload.get("type") or "model"
        repo_id = f"{namespace}/{payload['name']}"
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:  # the Hub's conflict answer names the repo's URL
                raise HubError(409, "You already created this repo", url=f"{self.hub.url}/{prefix}{repo_id}")
            repo = Repo(repo_type, repo_id, private, user)
            first = self.hub.new_commit(repo, None, {".gitattributes": self.hub.stored_file(GITATTRIBUTES, False)},
                                        "initial commit")
            repo.branches["main"] = first.oid
            self.hub.repos[(repo_type, repo_id)] = repo
        self._json({"url": f"{self.hub.url}/{prefix}{repo_id}", "name": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.S)
        try:
            meta = yaml.safe_load(match.group(1)) if match else {}
        except yaml.YAMLError as err:
            return self._json({"errors": [{"message": f"invalid YAML: {err}"}]}, 400)
        if meta is not None and not isinstance(meta, dict):
            return self._json({"errors": [{"message": "metadata must be a mapping"}]}, 400)
        self._json({"errors": [], "warnings": []})

    def _info(self, repo: Repo, revision: str) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        card = None
        if "README.md" in commit.files:
            text = self.hub.blob_path(commit.files["README.md"].sha256).read_text()
            match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.S)
            card = yaml.safe_load(match.group(1)) if match else None
        info = {
            "id": repo.repo_id, "author": repo.owner, "sha": commit.oid, "private": repo.private,
            "lastModified": commit.date, "createdAt": repo.commits[next(iter(repo.commits))].date,
            "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
            "siblings": [{"rfilename": p, "size": f.size} for p, f in sorted(commit.files.items())],
            "cardData": card,
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info["library_name"] = (card or {}).get("library_name")
        self._json(info)

    def _create_branch(self, repo: Repo, branch: str, payload: dict) -> None:
        if branch.startswith("refs/"):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        with self.hub.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = repo.resolve(payload.get("startingPoint") or "main")
            if start is None:
                raise HubError(404, f"Invalid rev id: {payload.get('startingPoint')}", "RevisionNotFound")
            repo.branches[branch] = start.oid
        self._json({})

    def _preupload(self, repo: Repo, revision: str, payload: dict) -> None:
        commit = repo.resolve(revision) or repo.resolve("main")
        files = []
        for f in payload["files"]:
            sample = base64.b64decode(f["sample"])
            lfs = f["path"].endswith(LFS_SUFFIXES) or b"\0" in sample or f["size"] > 10 * 1024 * 1024
            existing = commit.files.get(f["path"])
            oid = None if existing is None else (existing.sha256 if existing.lfs else existing.oid)
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        self._json({"files": files, "commitOid": commit.oid})

    def _lfs_batch(self, repo: Repo, payload: dict) -> None:
        if payload.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if not self.hub.blob_path(obj["oid"]).exists():
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}", "header": {}},
                    "verify": {"href": f"{self.hub.url}/lfs-verify", "header": {}},
                }
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, oid: str) -> None:
        content = self._body()
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, f"uploaded content does not hash to {oid}")
        self.hub.store(content)
        self._send(200)

    def _lfs_verify(self, payload: dict) -> None:
        path = self.hub.blob_path(payload["oid"])
        if not path.exists() or path.stat().st_size != payload["size"]:
            raise HubError(404, f"LFS object {payload['oid']} not uploaded")
        self._json({})

    def _commit(self, repo: Repo, revision: str, body: bytes) -> None:
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self.hub.lock:
            if revision not in repo.branches:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.branches[revision]]
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = self.hub.stored_file(base64.b64decode(value["content"]), lfs=False)
                elif key == "lfsFile":
                    blob = self.hub.blob_path(value["oid"])
                    if not blob.exists():
                        raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    files[value["path"]] = StoredFile(value["oid"], blob.stat().st_size, lfs=True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    for p in [p for p in files if p.startswith(prefix)]:
                        del files[p]
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            commit = self.hub.new_commit(repo, head.oid, files, header.get("summary", ""))
            repo.branches[revision] = commit.oid
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        self._json({"success": True, "commitOid": commit.oid,
                    "commitUrl": f"{self.hub.url}/{prefix}{repo.repo_id}/commit/{commit.oid}", "hookOutput": ""})

    def _entries(self, commit: Commit) -> dict[str, dict]:
        """Every file and folder of a commit as the tree API lists them."""
        out: dict[str, dict] = {}
        for p, f in commit.files.items():
            entry = {"type": "file", "oid": f.oid, "size": f.size, "path": p}
            if f.lfs:
                pointer = LFS_POINTER.format(sha=f.sha256, size=f.size)
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(pointer)}
            out[p] = entry
            parts = p.split("/")
            for i in range(1, len(parts)):
                folder = "/".join(parts[:i])
                out.setdefault(folder, {"type": "directory", "path": folder,
                                        "oid": hashlib.sha1(f"{commit.oid}:{folder}".encode()).hexdigest()})
        return out

    def _tree(self, repo: Repo, revision: str, sub: str, recursive: bool) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        entries = self._entries(commit)
        sub = sub.strip("/")
        if sub and entries.get(sub, {}).get("type") != "directory":
            raise HubError(404, f"{sub} does not exist on {revision}", "EntryNotFound")
        prefix = f"{sub}/" if sub else ""
        listed = [e for p, e in sorted(entries.items()) if p.startswith(prefix)
                  and (recursive or "/" not in p[len(prefix):])]
        self._json(listed)

    def _paths_info(self, repo: Repo, revision: str, paths: list[str]) -> None:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        entries = self._entries(commit)
        self._json([entries[p.strip("/")] for p in paths if p.strip("/") in entries])

    def _resolve(self, repo: Repo, revision: str, path: str) -> None:
        if self.command not in ("GET", "HEAD"):
            raise HubError(405, "method not allowed")
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        f = commit.files.get(path)
        if f is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound")
        headers = {"X-Repo-Commit": commit.oid, "ETag": f'"{f.oid}"', "Accept-Ranges": "bytes"}
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        content = self.hub.blob_path(f.sha256).read_bytes()
        status = 200
        if (rng := self.headers.get("Range")) and (m := re.match(r"bytes=(\d+)-(\d*)$", rng)):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(content) - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start:end + 1], 206
        self._send(status, content, headers, content_type="application/octet-stream")
