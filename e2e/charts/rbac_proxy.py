#!/usr/bin/env python3
"""An RBAC-enforcing proxy in front of the cluster simulator, so the operator runs under
exactly the permissions the chart grants it (the simulator itself authorizes nothing).

Usage: rbac_proxy.py SIM_KUBECONFIG RBAC_YAML OUT_KUBECONFIG DENIALS_FILE

Reads the ClusterRoles and Roles in RBAC_YAML (the chart's rendered RBAC), listens on a free
loopback port, writes OUT_KUBECONFIG (plain HTTP to the proxy, no credentials) and forwards
each allowed request to the simulator with the simulator's token. A request the rules do not
allow gets the API server's 403 Status and a line in DENIALS_FILE. Authorization follows the
API server's RBAC: a Role applies only in its namespace; list/watch with a `metadata.name`
field selector is authorized as that name; discovery and other non-resource paths are open
(as `system:discovery` makes them). Runs until killed.
"""
from __future__ import annotations

import base64
import http.client
import http.server
import json
import os
import ssl
import sys
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass

import yaml

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "host", "authorization", "content-length"}


@dataclass(frozen=True)
class Attrs:
    verb: str
    group: str
    resource: str  # "pods" or "pods/portforward"
    namespace: str | None
    name: str | None

    def __str__(self) -> str:
        where = f" in namespace {self.namespace}" if self.namespace else " (cluster-wide)"
        what = f"{self.resource}.{self.group}" if self.group else self.resource
        return f"{self.verb} {what}{' ' + self.name if self.name else ''}{where}"


def request_attrs(method: str, target: str) -> Attrs | None:
    """The RBAC attributes of a request, or None for a non-resource (discovery) request."""
    url = urllib.parse.urlsplit(target)
    query = urllib.parse.parse_qs(url.query)
    parts = [p for p in url.path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:
        return None
    if not rest:
        return None
    namespace = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else None
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"
    if method == "GET":
        if name:
            verb = "get"
        else:
            verb = "watch" if query.get("watch", [""])[0] in ("true", "1") else "list"
            for selector in query.get("fieldSelector", []):
                for term in selector.split(","):
                    if term.startswith("metadata.name="):
                        name = term.split("=", 1)[1]
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                "DELETE": "delete" if name else "deletecollection"}.get(method, method.lower())
    return Attrs(verb, group, resource, namespace, name)


class Rbac:
    def __init__(self, docs: list[dict]) -> None:
        self.rules: list[tuple[str | None, dict]] = []
        for d in docs:
            if d and d.get("kind") in ("ClusterRole", "Role"):
                ns = d["metadata"].get("namespace") if d["kind"] == "Role" else None
                self.rules += [(ns, r) for r in d.get("rules", [])]

    def allows(self, a: Attrs) -> bool:
        for ns, r in self.rules:
            if ns is not None and ns != a.namespace:
                continue
            if a.group not in r.get("apiGroups", []) or a.resource not in r.get("resources", []):
                continue
            if a.verb not in r.get("verbs", []):
                continue
            names = r.get("resourceNames") or []
            if names and a.name not in names:
                continue
            return True
        return False


def upstream_from(kubeconfig: str) -> tuple[str, int, ssl.SSLContext, str]:
    cfg = yaml.safe_load(open(kubeconfig))
    ctx_name = cfg["current-context"]
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    url = urllib.parse.urlsplit(cluster["server"])
    ca = tempfile.NamedTemporaryFile("wb", suffix=".crt", delete=False)
    ca.write(base64.b64decode(cluster["certificate-authority-data"]))
    ca.close()
    tls = ssl.create_default_context(cafile=ca.name)
    os.unlink(ca.name)
    return url.hostname or "127.0.0.1", url.port or 443, tls, user["token"]


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    sim_kubeconfig, rbac_yaml, out_kubeconfig, denials_path = argv[1:]
    rbac = Rbac(list(yaml.safe_load_all(open(rbac_yaml))))
    host, port, tls, token = upstream_from(sim_kubeconfig)
    denials = open(denials_path, "a", buffering=1)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_: object) -> None:
            pass

        def handle_any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            attrs = request_attrs(self.command, self.path)
            if attrs is not None and not rbac.allows(attrs):
                with lock:
                    denials.write(f"{attrs}\n")
                status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "reason": "Forbidden", "code": 403,
                          "message": f"forbidden: the chart's RBAC does not allow {attrs}"}
                payload = json.dumps(status).encode()
                self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Authorization"] = f"Bearer {token}"
            conn = http.client.HTTPSConnection(host, port, context=tls, timeout=600)
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP:
                        self.send_header(k, v)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                while True:
                    chunk = resp.read1(65536)
                    if not chunk:
                        break
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            finally:
                conn.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "rbac-proxy",
        "clusters": [{"name": "rbac-proxy", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
        "users": [{"name": "rbac-proxy", "user": {}}],
        "contexts": [{"name": "rbac-proxy", "context": {"cluster": "rbac-proxy", "user": "rbac-proxy"}}],
    }
    tmp = out_kubeconfig + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(kubeconfig, f)
    os.replace(tmp, out_kubeconfig)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
