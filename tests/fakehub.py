"""A local, in-memory stand-in for the Hugging Face Hub HTTP API, for tests of push and pull without internet.

It speaks enough of the Hub's API for the real ``huggingface_hub`` client (ECOSYSTEM.md §1 lists the endpoints):
create a repo, preupload, commit (ndjson), tags, repo info at a revision, the file tree, and
``HEAD``/``GET`` of ``/{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit`` and ``ETag`` headers.

Files below ``lfs_threshold`` bytes (10 MiB, as the Hub) are "regular": their content arrives inline in the
commit as base64. Larger ones take the Git LFS path of the real client (``huggingface_hub/lfs.py``,
``_commit_api.py``): preupload answers "lfs", the client posts to ``/{repo}.git/info/lfs/objects/batch``, PUTs
the bytes to the ``upload`` href (basic transfer, one part), posts the ``verify`` href, and the commit names the
file by ``lfsFile`` (sha256 oid and size); downloads of such files carry ``X-Linked-Etag``/``X-Linked-Size`` as
the Hub's do. No Xet: a client with ``hf_xet`` installed needs ``HF_HUB_DISABLE_XET=1`` for LFS uploads here.

Usage::

    hub = FakeHub().start()
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_fake"}   # set before huggingface_hub is imported
    ...
    hub.stop()

``huggingface_hub`` reads ``HF_ENDPOINT`` when imported, so run the client in a subprocess with that
environment (or patch ``huggingface_hub.constants`` before the first call).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

__all__ = ["FakeHub"]


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Repo:
    repo_type: str
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # sha -> {path: content}
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> sha
    private: bool = False
    lfs: dict[str, set[str]] = field(default_factory=dict)  # commit sha -> paths stored through LFS

    def resolve(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        return None


class FakeHub:
    """An in-memory Hub on 127.0.0.1 (free port). ``start()`` returns self; ``url`` is the endpoint."""

    def __init__(self, lfs_threshold: int = 10 * 1024 * 1024) -> None:
        self.repos: dict[str, _Repo] = {}  # key: "{type}s/{repo_id}"
        self.lfs_threshold = lfs_threshold
        self.lfs_objects: dict[str, bytes] = {}  # sha256 hex -> content, uploaded and verified
        self.requests: list[tuple[str, str]] = []  # (method, path) log, for debugging tests
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not started; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakehub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------- state changes

    def create_repo(self, repo_type: str, repo_id: str, private: bool = False) -> bool:
        """Create an empty repo with an initial commit on ``main``; False if it already exists."""
        key = f"{repo_type}s/{repo_id}"
        with self._lock:
            if key in self.repos:
                return False
            repo = _Repo(repo_type=repo_type, private=private)
            sha = self._new_sha(key, "init")
            repo.commits[sha] = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
            repo.refs["main"] = sha
            self.repos[key] = repo
            return True

    def commit(self, key: str, revision: str, ops: list[dict], parent: str | None = None) -> str:
        with self._lock:
            repo = self.repos[key]
            base = repo.resolve(parent or revision)
            files = dict(repo.commits[base]) if base else {}
            lfs = set(repo.lfs.get(base, set())) if base else set()
            for op in ops:
                lfs.discard(op["value"]["path"])
                if op["key"] == "file":
                    v = op["value"]
                    data = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
                    files[v["path"]] = data
                elif op["key"] == "deletedFile":
                    files.pop(op["value"]["path"], None)
                elif op["key"] == "deletedFolder":
                    prefix = op["value"]["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                elif op["key"] == "lfsFile":
                    v = op["value"]
                    data = self.lfs_objects.get(v["oid"])
                    if data is None or len(data) != v.get("size", len(data)):
                        raise ValueError(f"lfsFile {v['path']}: object {v['oid']} was never uploaded")
                    files[v["path"]] = data
                    lfs.add(v["path"])
            sha = self._new_sha(key, revision)
            repo.commits[sha] = files
            repo.lfs[sha] = lfs
            repo.refs[revision] = sha
            return sha

    @staticmethod
    def _new_sha(key: str, salt: str) -> str:
        return hashlib.sha1(f"{key}:{salt}:{time.time_ns()}".encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def log_message(self, fmt: str, *args: object) -> None:  # quiet: tests read hub.requests instead
        pass

    # ------------------------------------------------------------------------------------------ replies

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":  # a streamed file upload
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    # ------------------------------------------------------------------------------------------ routing

    def do_HEAD(self) -> None:
        self._route("HEAD")

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_DELETE(self) -> None:
        self._route("DELETE")

    def do_PUT(self) -> None:
        self._route("PUT")

    def _route(self, method: str) -> None:
        path = urlsplit(self.path).path
        self.fake.requests.append((method, path))
        parts = [unquote(p) for p in path.strip("/").split("/")]
        try:
            if method == "GET" and path.startswith("/api/whoami"):
                return self._json(200, {"type": "user", "name": "fake-user", "fullname": "Fake User", "orgs": [],
                                        "auth": {"accessToken": {"role": "write", "displayName": "fake"}}})
            if method == "POST" and path == "/api/repos/create":
                return self._create_repo()
            if method == "POST" and path == "/api/validate-yaml":
                self._body()
                return self._json(200, {"errors": [], "warnings": []})
            if method == "POST" and path.endswith(".git/info/lfs/objects/batch"):
                return self._lfs_batch()
            if method == "PUT" and parts[0] == "lfs-upload":
                return self._lfs_upload(parts[1])
            if method == "POST" and path == "/lfs-verify":
                return self._lfs_verify()
            if parts[0] == "api" and len(parts) >= 4 and parts[1] in ("models", "datasets", "spaces"):
                return self._api_repo(method, parts)
            if method in ("HEAD", "GET") and "resolve" in parts:
                return self._resolve(method, parts)
            self._body()
            return self._error(404, f"FakeHub: no route for {method} {path}")
        except KeyError as err:
            return self._error(404, f"FakeHub: not found: {err}", "RepoNotFound")

    # --------------------------------------------------------------------------------------- endpoints

    def _create_repo(self) -> None:
        req = json.loads(self._body() or b"{}")
        name, org = req["name"], req.get("organization")
        repo_id = f"{org}/{name}" if org else f"fake-user/{name}"
        repo_type = req.get("type") or "model"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self.fake.url}/{prefix}{repo_id}"
        if not self.fake.create_repo(repo_type, repo_id, bool(req.get("private"))):
            return self._json(409, {"error": "You already created this model repo", "url": url},
                              {"X-Error-Message": "You already created this model repo"})
        return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _api_repo(self, method: str, parts: list[str]) -> None:
        # /api/{type}s/{ns}/{name}[/{action}[/{rev...}]]
        rtype = parts[1]
        repo_id = "/".join(parts[2:4])
        key = f"{rtype}/{repo_id}"
        action = parts[4] if len(parts) > 4 else None
        rest = parts[5:]
        repo = self.fake.repos.get(key)
        if repo is None:
            self._body()
            return self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
        if action in (None, "revision") and method == "GET":
            revision = "/".join(rest) if action == "revision" else "main"
            return self._repo_info(repo, repo_id, revision)
        if action == "preupload" and method == "POST":
            req = json.loads(self._body() or b"{}")
            files = [{"path": f["path"], "shouldIgnore": False, "oid": None,
                      "uploadMode": "lfs" if f.get("size", 0) >= self.fake.lfs_threshold else "regular"}
                     for f in req.get("files", [])]
            return self._json(200, {"files": files, "commitOid": repo.resolve("/".join(rest) or "main")})
        if action == "commit" and method == "POST":
            revision = "/".join(rest) or "main"
            lines = [json.loads(line) for line in self._body().decode().splitlines() if line.strip()]
            header = next((ln["value"] for ln in lines if ln["key"] == "header"), {})
            ops = [ln for ln in lines if ln["key"] != "header"]
            if revision not in repo.refs and repo.resolve(revision) is None:
                return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            try:
                sha = self.fake.commit(key, revision, ops, parent=header.get("parentCommit"))
            except ValueError as err:  # an lfsFile whose content never arrived
                return self._error(400, str(err))
            return self._json(200, {"commitUrl": f"{self.fake.url}/{repo_id}/commit/{sha}", "commitOid": sha,
                                    "commitMessage": header.get("summary", ""), "pullRequestUrl": None})
        if action == "tag" and method == "POST":
            req = json.loads(self._body() or b"{}")
            sha = repo.resolve("/".join(rest) or "main")
            if sha is None:
                return self._error(404, f"Invalid rev id: {'/'.join(rest)}", "RevisionNotFound")
            if req["tag"] in repo.refs:
                return self._error(409, f"tag {req['tag']} already exists")
            repo.refs[req["tag"]] = sha
            return self._json(200, {"name": req["tag"]})
        if action == "tree" and method == "GET":
            revision, *sub = rest if rest else ["main"]
            sha = repo.resolve(revision)
            if sha is None:
                return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            prefix = "/".join(sub)
            lfs = repo.lfs.get(sha, set())
            entries = [
                {"type": "file", "path": p, "size": len(d), "oid": _git_blob_sha(d),
                 **({"lfs": {"oid": hashlib.sha256(d).hexdigest(), "size": len(d), "pointerSize": 134}}
                    if p in lfs else {})}
                for p, d in sorted(repo.commits[sha].items())
                if not prefix or p.startswith(prefix.rstrip("/") + "/")
            ]
            return self._json(200, entries)
        if action == "refs" and method == "GET":
            branches = [{"name": r, "ref": f"refs/heads/{r}", "targetCommit": s} for r, s in repo.refs.items()
                        if r == "main"]
            tags = [{"name": r, "ref": f"refs/tags/{r}", "targetCommit": s} for r, s in repo.refs.items()
                    if r != "main"]
            return self._json(200, {"branches": branches, "tags": tags, "converts": []})
        self._body()
        return self._error(404, f"FakeHub: unsupported {method} {action}")

    def _repo_info(self, repo: _Repo, repo_id: str, revision: str) -> None:
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        files = repo.commits[sha]
        return self._json(200, {
            "id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private, "disabled": False,
            "gated": False, "downloads": 0, "likes": 0, "tags": [], "lastModified": "2024-01-01T00:00:00.000Z",
            "createdAt": "2024-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": p, "size": len(d)} for p, d in sorted(files.items())],
        })

    def _resolve(self, method: str, parts: list[str]) -> None:
        # /{ns}/{name}/resolve/{rev}/{path...} (models) or /{type}s/{ns}/{name}/resolve/...
        i = parts.index("resolve")
        prefix = parts[:i]
        rtype = prefix[0] if prefix[0] in ("datasets", "spaces") else "models"
        repo_id = "/".join(prefix[1:] if rtype != "models" else prefix)
        repo = self.fake.repos.get(f"{rtype}/{repo_id}")
        if repo is None:
            return self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
        revision, path = parts[i + 1], "/".join(parts[i + 2 :])
        sha = repo.resolve(revision)
        if sha is None:
            return self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        data = repo.commits[sha].get(path)
        if data is None:
            return self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                                         "X-Repo-Commit": sha}, head=method == "HEAD")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_blob_sha(data)}"'}
        if path in repo.lfs.get(sha, set()):  # the Hub names LFS content by its sha256
            headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))})
        self._send(200, data, headers, content_type="application/octet-stream", head=method == "HEAD")

    # -------------------------------------------------------------------------------------- Git LFS

    def _lfs_batch(self) -> None:
        """The LFS batch API (upload operation, basic transfer): an upload and a verify action per new object."""
        req = json.loads(self._body() or b"{}")
        if req.get("operation") != "upload" or "basic" not in req.get("transfers", ["basic"]):
            return self._error(422, "FakeHub: only the upload operation with the basic transfer is supported")
        objects = []
        for obj in req.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.fake.lfs_objects:  # no actions: the client skips content already stored
                entry["actions"] = {"upload": {"href": f"{self.fake.url}/lfs-upload/{obj['oid']}", "header": {}},
                                    "verify": {"href": f"{self.fake.url}/lfs-verify", "header": {}}}
            objects.append(entry)
        return self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, f"FakeHub: uploaded content does not hash to {oid}")
        with self.fake._lock:
            self.fake.lfs_objects[oid] = data
        return self._send(200)

    def _lfs_verify(self) -> None:
        req = json.loads(self._body() or b"{}")
        data = self.fake.lfs_objects.get(req.get("oid", ""))
        if data is None or len(data) != req.get("size"):
            return self._error(404, f"FakeHub: LFS object {req.get('oid')} of size {req.get('size')} not found")
        return self._json(200, {"message": "verified"})
