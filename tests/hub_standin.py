"""A stand-in for the Hugging Face Hub's *write* API, for tests only.

The real Hub cannot be reached from the test machines. This small HTTP server on 127.0.0.1 answers
the calls that the unmodified ``huggingface_hub`` client makes to publish a dataset or a model (with
``HF_HUB_DISABLE_XET=1``): repository creation, pre-upload (which files go through LFS, and the
current object ids so unchanged files are skipped), the LFS batch API and its upload target,
commits (NDJSON), and revision info. Every commit becomes a real git commit in
``MIRRORS/datasets/ORG/NAME``, with LFS objects stored as their content, so that ``olah`` (a real
third-party Hub mirror server, run offline over those git repositories) serves the read side to
``datasets.load_dataset``.

While ``fail_commits`` or ``fail_uploads`` is set, those requests are refused (HTTP 422, which the
client does not retry), to test that a failed push loses nothing and can be retried.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

LFS_SUFFIXES = (".parquet", ".png", ".arrow", ".bin", ".safetensors")


def git_blob_sha1(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class HubStandIn:
    def __init__(self, mirrors: Path) -> None:
        self.mirrors = Path(mirrors)
        self.lfs_store = self.mirrors.parent / "lfs-store"
        self.lfs_store.mkdir(parents=True, exist_ok=True)
        self.fail_commits = False
        self.fail_uploads = False
        self.requests: list[str] = []
        self.lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"hub": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def repo_path(self, repo_id: str, kind: str = "datasets") -> Path:
        return self.mirrors / kind / repo_id

    def commit(self, repo: Path, message: str) -> None:
        identity = ["-c", "user.name=hub", "-c", "user.email=hub@localhost"]
        self.git(repo, *identity, "commit", "-q", "--allow-empty", "-m", message)

    def git(self, repo: Path, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
        ).stdout.strip()


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandIn

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _reply(self, status: int, payload: dict | None = None) -> None:
        body = json.dumps(payload or {}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_POST(self) -> None:
        self.hub.requests.append(f"POST {self.path}")
        body = self._body()
        if self.path == "/api/repos/create":
            return self._create(json.loads(body))
        if self.path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        match = re.match(r"^/api/(models|datasets)/([^/]+/[^/]+)/preupload/([^/?]+)", self.path)
        if match:
            return self._preupload(self.hub.repo_path(match[2], match[1]), json.loads(body))
        match = re.match(r"^/(datasets/)?([^/]+/[^/]+)\.git/info/lfs/objects/batch$", self.path)
        if match:
            return self._lfs_batch(json.loads(body))
        match = re.match(r"^/api/(models|datasets)/([^/]+/[^/]+)/commit/([^/?]+)", self.path)
        if match:
            return self._commit(match[1], match[2], body)
        self._reply(404, {"error": f"stand-in does not serve POST {self.path}"})

    def do_PUT(self) -> None:
        self.hub.requests.append(f"PUT {self.path}")
        match = re.match(r"^/lfs-upload/([0-9a-f]{64})$", self.path)
        body = self._body()
        if not match:
            return self._reply(404, {"error": "unknown upload target"})
        if self.hub.fail_uploads:
            return self._reply(422, {"error": "injected upload failure"})
        if hashlib.sha256(body).hexdigest() != match[1]:
            return self._reply(400, {"error": "sha256 mismatch"})
        (self.hub.lfs_store / match[1]).write_bytes(body)
        self._reply(200)

    def do_GET(self) -> None:
        self.hub.requests.append(f"GET {self.path}")
        match = re.match(r"^/api/(models|datasets)/([^/]+/[^/]+)/revision/([^/?]+)", self.path)
        if match and self.hub.repo_path(match[2], match[1]).exists():
            repo = self.hub.repo_path(match[2], match[1])
            sha = self.hub.git(repo, "rev-parse", match[3])
            return self._reply(200, {"id": match[2], "sha": sha, "private": True, "siblings": []})
        self._reply(404, {"error": "Repository not found"})

    # -- handlers ---------------------------------------------------------------------------

    def _create(self, payload: dict) -> None:
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        kind = "datasets" if payload.get("type") == "dataset" else "models"
        repo = self.hub.repo_path(repo_id, kind)
        url = f"{self.hub.endpoint}/{'datasets/' if kind == 'datasets' else ''}{repo_id}"
        if repo.exists():
            return self._reply(409, {"error": "You already created this dataset repo", "url": url})
        repo.mkdir(parents=True)
        self.hub.git(repo, "init", "-q", "-b", "main")
        self.hub.commit(repo, "initial commit")
        self._reply(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, payload: dict) -> None:
        match = re.match(r"^---\n(.*?)\n---", payload["content"], flags=re.S)
        try:
            metadata = yaml.safe_load(match[1]) if match else None
        except yaml.YAMLError as err:
            return self._reply(400, {"errors": [{"message": f"invalid YAML: {err}"}]})
        if not isinstance(metadata, dict):
            return self._reply(400, {"errors": [{"message": "the card has no YAML metadata block"}]})
        self._reply(200, {"errors": [], "warnings": []})

    def _preupload(self, repo: Path, payload: dict) -> None:
        files = []
        for item in payload["files"]:
            path = item["path"]
            lfs = path.endswith(LFS_SUFFIXES)
            existing = repo / path
            oid = None
            if existing.exists():
                content = existing.read_bytes()
                oid = hashlib.sha256(content).hexdigest() if lfs else git_blob_sha1(content)
            files.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._reply(200, {"files": files})

    def _lfs_batch(self, payload: dict) -> None:
        objects = []
        for obj in payload["objects"]:
            entry = {"oid": obj["oid"], "size": obj["size"]}
            if not (self.hub.lfs_store / obj["oid"]).exists():
                entry["actions"] = {"upload": {"href": f"{self.hub.endpoint}/lfs-upload/{obj['oid']}"}}
            objects.append(entry)
        self._reply(200, {"transfer": "basic", "objects": objects})

    def _commit(self, kind: str, repo_id: str, body: bytes) -> None:
        if self.hub.fail_commits:
            return self._reply(422, {"error": "injected commit failure"})
        repo = self.hub.repo_path(repo_id, kind)
        if not repo.exists():
            return self._reply(404, {"error": "Repository not found"})
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        header = next(item["value"] for item in lines if item["key"] == "header")
        with self.hub.lock:
            for item in lines:
                value = item["value"]
                if item["key"] == "file":
                    target = repo / value["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(base64.b64decode(value["content"]))
                elif item["key"] == "lfsFile":
                    stored = self.hub.lfs_store / value["oid"]
                    if not stored.exists():
                        return self._reply(422, {"error": f"LFS object {value['oid']} was never uploaded"})
                    target = repo / value["path"]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(stored.read_bytes())
                elif item["key"] == "deletedFile":
                    (repo / value["path"]).unlink(missing_ok=True)
            self.hub.git(repo, "add", "-A")
            self.hub.commit(repo, header["summary"])
            sha = self.hub.git(repo, "rev-parse", "HEAD")
        self._reply(
            200,
            {"commitUrl": f"{self.hub.endpoint}/datasets/{repo_id}/commit/{sha}", "commitOid": sha, "success": True},
        )
