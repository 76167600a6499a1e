"""A minimal fake Kubernetes API server on 127.0.0.1 that records what a client submits.

Enough of the API for snakemake-executor-plugin-kubernetes: it creates a Secret, POSTs batch/v1
Jobs, reads their status, lists their pods and deletes both. Every Job is recorded (the exact
manifest the plugin built) and then reported as failed without running anything, so a run stops
after its first wave of jobs. This checks what the plugin *would* ask a real cluster for; it does
not check that a real API server accepts it, schedules it, or that the image works.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

NS = r"/namespaces/(?P<ns>[^/]+)"


class Handler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def _record(self, method: str) -> str:
        path = self.path.split("?")[0]
        with self.server.lock:
            self.server.calls.append((method, self.path))
        return path

    def do_POST(self):
        path = self._record("POST")
        body = self._body()
        if re.fullmatch(rf"/api/v1{NS}/secrets", path):
            with self.server.lock:
                self.server.secrets.append(body)
            return self._send(201, body)
        if re.fullmatch(rf"/apis/batch/v1{NS}/jobs", path):
            with self.server.lock:
                self.server.jobs.append(body)
            if self.server.on_job:
                self.server.on_job(body)
            body.setdefault("status", {})
            return self._send(201, body)
        return self._send(404, {"kind": "Status", "status": "Failure", "code": 404})

    def do_GET(self):
        path = self._record("GET")
        m = re.fullmatch(rf"/apis/batch/v1{NS}/jobs/(?P<name>[^/]+)/status", path)
        if m:
            job = next((j for j in self.server.jobs if j["metadata"]["name"] == m["name"]), None)
            if job is None:
                return self._send(404, {"kind": "Status", "status": "Failure", "code": 404})
            # never run: report the job as failed so the workflow stops after this wave
            return self._send(200, {**job, "status": {"failed": 1}})
        if re.fullmatch(rf"/api/v1{NS}/pods", path):
            return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
        return self._send(404, {"kind": "Status", "status": "Failure", "code": 404})

    def do_DELETE(self):
        self._record("DELETE")
        self._body()
        return self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def fake_k8s_api(kubeconfig: Path, on_job=None):
    """Run the fake API server; write a kubeconfig for it to `kubeconfig`.

    on_job(manifest) is called for every Job POSTed (e.g. to look at storage while the run is live).
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.lock = threading.Lock()
    server.calls, server.jobs, server.secrets = [], [], []
    server.on_job = on_job
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": url}}],
                "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                "current-context": "fake",
            }
        )
    )
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
