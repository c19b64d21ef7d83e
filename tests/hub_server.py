"""A small stand-in for the Hugging Face Hub on 127.0.0.1, for tests.

It answers the requests ``huggingface_hub`` 2.x makes, with the headers it reads:

- ``HEAD``/``GET /{repo}/resolve/{revision}/{file}``: ``X-Repo-Commit``, ``ETag`` (git blob
  id) and ``Content-Length`` for regular files; LFS files (``*.safetensors``) answer
  ``302`` to a "CDN" URL on another host name (``localhost``) with ``X-Linked-Etag``
  (the SHA-256) and ``X-Linked-Size``, as the real Hub does. Errors carry
  ``X-Error-Code`` (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``).
- ``GET /api/models/{repo}/revision/{revision}``: repo info (``sha``, ``siblings``).
- ``GET /api/models/{repo}/tree/{revision}``: the commit's files, one page (what
  ``upload_folder(delete_patterns=...)`` lists).
- Upload: ``POST /api/repos/create``, ``/api/validate-yaml``,
  ``/api/models/{repo}/preupload/{revision}`` (every file "regular") and
  ``/api/models/{repo}/commit/{revision}`` (ndjson, base64 contents).

Every request is recorded in :attr:`LocalHub.requests` so tests can count them.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin")


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)

    def commit_of(self, revision: str) -> str | None:
        if revision in self.refs:
            return self.refs[revision]
        return revision if revision in self.commits else None


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """A threaded HTTP server holding model repos in memory; use as a context manager."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._counter = itertools.count()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LocalHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ content
    def publish(
        self, repo_id: str, files: Mapping[str, bytes], *, branch: str = "main", commit: str | None = None,
        parent: bool = False,
    ) -> str:
        """Add a commit holding ``files`` (plus the branch head's files if ``parent``); returns its id."""
        with self._lock:
            repo = self.repos.setdefault(repo_id, Repo())
            base = dict(repo.commits.get(repo.refs.get(branch, ""), {})) if parent else {}
            base.update(files)
            if commit is None:
                seed = json.dumps([repo_id, next(self._counter), sorted(git_blob_id(v) for v in base.values())])
                commit = hashlib.sha1(seed.encode()).hexdigest()
            repo.commits[commit] = base
            repo.refs[branch] = commit
            for data in base.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
            return commit

    def publish_folder(self, repo_id: str, folder: str | Path, **options: Any) -> str:
        files = {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}
        return self.publish(repo_id, files, **options)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.commit_of(revision) or ""]

    def count(self, method: str | None = None, contains: str = "") -> int:
        with self._lock:
            return sum(1 for r in self.requests if (method is None or r.method == method) and contains in r.path)


_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>.+)$")
_REVISION_INFO = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<revision>[^/]+)$")
_PREUPLOAD = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/preupload/(?P<revision>[^/]+)$")
_COMMIT = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/commit/(?P<revision>[^/]+)$")
_CDN = re.compile(r"^/cdn/(?P<sha256>[0-9a-f]{64})$")
_TREE = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<revision>[^/]+)$")


def _handler_for(hub: LocalHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's name
            pass

        # -------------------------------------------------------------- plumbing
        def _record(self) -> str:
            path = urlsplit(self.path).path
            with hub._lock:
                hub.requests.append(Request(self.command, path, {k.lower(): v for k, v in self.headers.items()}))
            return path

        def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, value: Any, headers: Mapping[str, str] | None = None) -> None:
            self._send(status, json.dumps(value).encode(), {"Content-Type": "application/json", **(headers or {})})

        def _error(self, status: int, code: str, headers: Mapping[str, str] | None = None) -> None:
            self._json(status, {"error": code}, {"X-Error-Code": code, "X-Error-Message": code, **(headers or {})})

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(unquote(repo_id))
            if repo is None:
                self._error(404, "RepoNotFound")
            return repo

        # -------------------------------------------------------------- downloads
        def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
            self.do_GET()

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self._record()
            if match := _CDN.match(path):
                data = hub.blobs.get(match["sha256"])
                return self._send(200, data) if data is not None else self._error(404, "EntryNotFound")
            if match := _REVISION_INFO.match(path):
                return self._revision_info(match["repo"], unquote(match["revision"]))
            if match := _TREE.match(path):
                return self._tree(match["repo"], unquote(match["revision"]))
            if match := _RESOLVE.match(path):
                return self._resolve(match["repo"], unquote(match["revision"]), unquote(match["file"]))
            self._error(404, "NotFound")

        def _find_commit(self, repo_id: str, revision: str) -> tuple[Any, str] | None:
            """The repo and the commit ``revision`` names, or None once a 404 is sent."""
            repo = self._repo(repo_id)
            if repo is None:
                return None
            commit = repo.commit_of(revision)
            if commit is None:
                self._error(404, "RevisionNotFound")
                return None
            return repo, commit

        def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
            found = self._find_commit(repo_id, revision)
            if found is None:
                return
            repo, commit = found
            data = repo.commits[commit].get(filename)
            if data is None:
                return self._error(404, "EntryNotFound", {"X-Repo-Commit": commit})
            headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_id(data)}"'}
            if filename.endswith(LFS_SUFFIXES):
                sha256 = hashlib.sha256(data).hexdigest()
                headers.update({
                    "X-Linked-Etag": f'"{sha256}"',
                    "X-Linked-Size": str(len(data)),
                    "Location": f"http://localhost:{hub.port}/cdn/{sha256}",
                })
                return self._send(302, b"", headers)
            self._send(200, data, headers)

        def _revision_info(self, repo_id: str, revision: str) -> None:
            found = self._find_commit(repo_id, revision)
            if found is None:
                return
            repo, commit = found
            siblings = [{"rfilename": name, "size": len(data)} for name, data in sorted(repo.commits[commit].items())]
            self._json(200, {"id": unquote(repo_id), "modelId": unquote(repo_id), "sha": commit, "siblings": siblings})

        def _tree(self, repo_id: str, revision: str) -> None:
            """The files of a commit, one page (a repo created but not yet committed to has none)."""
            repo = self._repo(repo_id)
            if repo is None:
                return
            commit = repo.commit_of(revision)
            files = repo.commits[commit] if commit is not None else {}
            self._json(200, [{"type": "file", "path": name, "size": len(data), "oid": git_blob_id(data)}
                             for name, data in sorted(files.items())])

        # -------------------------------------------------------------- uploads
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            path = self._record()
            body = self._body()
            if path == "/api/repos/create":
                payload = json.loads(body)
                repo_id = "/".join(p for p in (payload.get("organization"), payload["name"]) if p)
                if repo_id in hub.repos:
                    return self._json(409, {"error": "You already created this model repo",
                                            "url": f"{hub.url}/{repo_id}"})
                with hub._lock:
                    hub.repos[repo_id] = Repo()
                return self._json(200, {"url": f"{hub.url}/{repo_id}"})
            if path == "/api/validate-yaml":
                return self._json(200, {"errors": [], "warnings": []})
            if match := _PREUPLOAD.match(path):
                return self._preupload(match["repo"], unquote(match["revision"]), json.loads(body))
            if match := _COMMIT.match(path):
                return self._commit(match["repo"], unquote(match["revision"]), body)
            self._error(404, "NotFound")

        def _preupload(self, repo_id: str, revision: str, payload: dict[str, Any]) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            current = repo.commits.get(repo.commit_of(revision) or "", {})
            files = [
                {
                    "path": f["path"],
                    "uploadMode": "regular",
                    "shouldIgnore": False,
                    "oid": git_blob_id(current[f["path"]]) if f["path"] in current else None,
                }
                for f in payload["files"]
            ]
            self._json(200, {"files": files})

        def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            changes: dict[str, bytes] = {}
            deleted: set[str] = set()
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    changes[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                elif item["key"] == "deletedFile":
                    deleted.add(item["value"]["path"])
                elif item["key"] != "header":
                    return self._error(400, f"Unsupported{item['key']}")
            files = {k: v for k, v in hub.files(repo_id, revision).items() if k not in deleted} if revision in repo.refs else {}
            commit = hub.publish(unquote(repo_id), {**files, **changes}, branch=revision)
            self._json(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{commit}", "commitOid": commit,
                             "pullRequestUrl": None})

    return Handler
