#!/usr/bin/env python3
"""Validates the keytrap container build and Helm chart with the real Helm engine.

    python charts/check.py [--kube-version 1.37] [--docker-build]

Needs the PyPI packages helm-python-sdk (Helm's own Go SDK through a C library: lint,
render, values.schema.json validation; no helm binary, no cluster) and
kubernetes-validate (the Kubernetes OpenAPI schemas, strict: unknown fields fail).

What it checks:
  * the Dockerfile builds with the same cargo command as CI and the docs, from a build
    context (.dockerignore applied) that holds the whole workspace and the embedded
    migrations, on a distroless non-root runtime with no shell step;
  * `helm lint --strict`; every key of values.yaml is described by values.schema.json;
  * three renderings (default values, ci/allinone-values.yaml, ci/production-values.yaml):
    every object valid for Kubernetes (CRDs: shape only), labels, every hardening item in
    every pod spec (Deployments, the migration Job, the test pod), probes on the health
    port, secrets only by reference, generated secrets nowhere but in their Secret, the
    per-mode promises (allinone: one pod, no HPA/PDB/Job; production: HPA, PDBs,
    NetworkPolicies, ServiceMonitor, trap Ingress per exchange host);
  * invalid values (wrong types, unknown role, bad mode, unknown keys, plain secrets) are
    refused by the schema, and template-level mistakes fail the render with a message.

Prints one line per check and ends with `N passed, M failed`; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import base64
import copy
import ipaddress
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

try:
    import helm_python as helm
    import kubernetes_validate
except ImportError as e:  # pragma: no cover - environment problem, say what to install
    sys.exit(f"charts/check.py: {e}; install helm-python-sdk and kubernetes-validate")

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "keytrap"
# The one build command: Dockerfile, docs/deployment.md and CI must agree on it.
BUILD_COMMAND = "cargo build --release -p keytrap --locked"
RELEASE, NAMESPACE = "kt", "keytrap"
EXCHANGES = {"binance", "kucoin", "coinbase", "coinbase-exchange", "okx", "kraken", "bybit"}
# Kinds that are CustomResourceDefinitions: no schema in kubernetes-validate, so only
# their shape is checked here.
CRD_KINDS = {"ServiceMonitor"}
# Schema objects that deliberately pass Kubernetes objects through (validated after
# rendering by kubernetes-validate instead).
PASS_THROUGH = {"affinity", "securityContext", "envVar.valueFrom", "peer.namespaceSelector",
                "peer.podSelector", "stringMap"}
SECRET_ENV = {"KEYTRAP_MASTER_KEY", "KEYTRAP_ADMIN_TOKEN", "PGPASSWORD"}


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def section(self, title: str) -> None:
        print(f"\n== {title}")

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"PASS {name}")
        else:
            self.failed.append(name)
            print(f"FAIL {name}" + (f": {detail}" if detail else ""))
        return ok

    def run(self, name: str, fn: Callable[[], str | None]) -> None:
        """fn returns None on success or a failure detail; exceptions are failures."""
        try:
            detail = fn()
        except Exception as e:  # a check that crashes is a failed check, not a crash
            detail = f"{type(e).__name__}: {e}"
        self.check(name, detail is None, detail or "")


# ---------------------------------------------------------------------------- Dockerfile

def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex on posix paths."""
    p = pattern.strip().strip("/")
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(f"^{out}$")


def build_context(root: Path) -> list[str]:
    """The tracked files docker would send, .dockerignore applied (last match wins, a
    pattern matching a parent directory matches the file, `!` re-includes)."""
    rules = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        rules.append((neg, dockerignore_regex(line[1:] if neg else line)))
    files = subprocess.run(["git", "ls-files", "-z"], cwd=root, check=True,
                           capture_output=True, text=True).stdout.split("\0")
    kept = []
    for f in filter(None, files):
        parts = f.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        excluded = False
        for neg, rx in rules:
            if any(rx.match(p) for p in prefixes):
                excluded = not neg
        if not excluded and (root / f).is_file():
            kept.append(f)
    return kept


def dockerfile_stages(text: str) -> list[list[str]]:
    """Instructions per stage, continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    stages: list[list[str]] = []
    for line in joined.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(re.sub(r"\s+", " ", s))
    return stages


def check_docker(r: Report, docker_build: bool) -> None:
    r.section("container image (Dockerfile, .dockerignore)")
    text = (ROOT / "Dockerfile").read_text()
    stages = dockerfile_stages(text)
    r.check("Dockerfile is multi-stage", len(stages) >= 2, f"{len(stages)} stage(s)")
    builder, runtime = stages[0], stages[-1]
    runs = [i for i in builder if i.upper().startswith("RUN ")]
    r.check(f"builder runs `{BUILD_COMMAND}`", any(BUILD_COMMAND in i for i in runs),
            f"RUN steps: {runs}")
    base = runtime[0].split()[1]
    r.check("runtime image is distroless or scratch",
            base.startswith("gcr.io/distroless/") or base == "scratch", base)
    r.check("runtime has no RUN step (needs no shell)",
            not any(i.upper().startswith("RUN ") for i in runtime[1:]))
    users = [i.split()[1] for i in runtime if i.upper().startswith("USER ")]
    nonroot = (users and users[-1].split(":")[0] not in {"0", "root"}) or base.endswith(":nonroot")
    r.check("runtime user is not root", bool(nonroot), f"USER {users} on {base}")
    entry = [i for i in runtime if i.upper().startswith("ENTRYPOINT ")]
    r.check("ENTRYPOINT is exec form (no shell)",
            bool(entry) and entry[-1].split(" ", 1)[1].startswith("["), str(entry))
    copies = [i for i in runtime if i.upper().startswith("COPY ")]
    r.check("runtime copies only the binary", len(copies) == 1 and "keytrap" in copies[0],
            str(copies))

    doc = (ROOT / "docs" / "deployment.md").read_text() if (ROOT / "docs" / "deployment.md").exists() else ""
    r.check("docs/deployment.md shows the same build command", BUILD_COMMAND in doc)
    ci = (ROOT / ".ci" / "run").read_text() if (ROOT / ".ci" / "run").exists() else ""
    ci_builds = re.findall(r"cargo build[^\n]*", ci)

    def pkgs(cmd: str) -> set[str]:
        return set(re.findall(r"(?:-p|--package)\s+(\S+)", cmd))

    r.check("CI builds the same package (-p keytrap) as the image",
            any(pkgs(c) == {"keytrap"} for c in ci_builds), f"CI: {ci_builds}")
    same = any(BUILD_COMMAND in c for c in ci_builds)
    print(f"     note: CI {'runs the identical command' if same else 'builds the debug profile; the image builds --release --locked from the same Cargo.lock'}")

    context = build_context(ROOT)
    ctx = tempfile.mkdtemp(prefix="keytrap-docker-context-")
    try:
        for f in context:
            dst = Path(ctx) / f
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst)
        r.check("build context excludes target/, .venv/, .git/",
                not any(f.split("/")[0] in {"target", ".venv", ".git"} for f in context))

        def metadata() -> str | None:
            cmd = ["cargo", "metadata", "--format-version", "1", "--locked"]
            p = subprocess.run(cmd + ["--offline"], cwd=ctx, capture_output=True, text=True)
            if p.returncode != 0:
                p = subprocess.run(cmd, cwd=ctx, capture_output=True, text=True)
            if p.returncode != 0:
                return "cargo metadata --locked failed in the build context: " + p.stderr[-600:]
            meta = json.loads(p.stdout)
            members = {x for x in meta["workspace_members"]}
            by_id = {pk["id"]: pk for pk in meta["packages"]}
            names = {by_id[m]["name"] for m in members}
            kt = [by_id[m] for m in members if by_id[m]["name"] == "keytrap"]
            if not kt or not any(t["name"] == "keytrap" and "bin" in t["kind"] for t in kt[0]["targets"]):
                return f"no bin target keytrap in package keytrap (members {sorted(names)})"
            return None

        r.run("build context is a complete workspace; Cargo.lock is current (cargo metadata --locked)", metadata)

        def migrations() -> str | None:
            found = []
            for src in Path(ctx, "services").rglob("*.rs"):
                for rel in re.findall(r'sqlx::migrate!\("([^"]+)"\)', src.read_text()):
                    crate = next(p for p in src.parents if (p / "Cargo.toml").exists())
                    d = (crate / rel).resolve()
                    sql = list(d.glob("*.sql")) if d.is_dir() else []
                    if not sql:
                        return f"{rel} (from {src.relative_to(ctx)}) is not in the build context"
                    found.append(f"{d.name}: {len(sql)} files")
            if len(found) < 2:
                return f"expected the sqlite and postgres migrators, found {found}"
            print(f"     note: migrations are embedded at compile time ({', '.join(found)}), so the runtime image needs no copy")
            return None

        r.run("migrations are embedded (sqlx::migrate!) and present in the build context", migrations)

        if docker_build:
            def build() -> str | None:
                env = {"CARGO_TARGET_DIR": str(ROOT / "target")}
                p = subprocess.run(BUILD_COMMAND.split(), cwd=ctx, capture_output=True, text=True,
                                   env={**__import__("os").environ, **env})
                if p.returncode != 0:
                    return p.stderr[-1000:]
                h = subprocess.run([str(ROOT / "target" / "release" / "keytrap"), "migrate", "--help"],
                                   capture_output=True, text=True)
                return None if h.returncode == 0 else h.stderr
            r.run(f"`{BUILD_COMMAND}` builds in the build context and the binary runs", build)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


# ---------------------------------------------------------------------------- schema

def resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/definitions/"), ref
        node = schema["definitions"][ref.split("/")[-1]]
    return node


def uncovered_paths(schema: dict, node: dict, value: Any, path: str) -> Iterator[str]:
    node = resolve(schema, node)
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        for k, v in value.items():
            if k in props:
                yield from uncovered_paths(schema, props[k], v, f"{path}.{k}")
            elif isinstance(extra, dict):
                yield from uncovered_paths(schema, extra, v, f"{path}.{k}")
            elif node.get("type") == "object" and extra is not False and not props:
                continue  # a pass-through object (affinity, selectors)
            else:
                yield f"{path}.{k}"
    elif isinstance(value, list) and "items" in node:
        for i, v in enumerate(value):
            yield from uncovered_paths(schema, node["items"], v, f"{path}[{i}]")


def open_objects(schema: dict) -> list[str]:
    """Schema objects with properties but no additionalProperties: false."""
    out = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and node.get("additionalProperties", True) is not False:
                if where.split("/")[-1] not in {p.split(".")[-1] for p in PASS_THROUGH} and \
                        where.replace("definitions/", "").replace("/properties/", ".") not in PASS_THROUGH:
                    if not isinstance(node.get("additionalProperties"), dict):
                        out.append(where)
            for k, v in node.items():
                walk(v, f"{where}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}/{i}")

    walk(schema, "")
    return out


def check_schema(r: Report, chart: Any) -> None:
    r.section("values.schema.json")
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = list(uncovered_paths(schema, schema, defaults, "values"))
    r.check("every key of values.yaml is in the schema", not missing, ", ".join(missing))
    for f in sorted((CHART / "ci").glob("*.yaml")):
        vals = yaml.safe_load(f.read_text())
        miss = list(uncovered_paths(schema, schema, vals, f.name))
        r.check(f"every key of ci/{f.name} is in the schema", not miss, ", ".join(miss))
    r.check("the root refuses unknown keys", schema.get("additionalProperties") is False)
    # Objects left open on purpose are Kubernetes pass-through types; report the rest.
    opened = [w for w in open_objects(schema)
              if not re.search(r"(affinity|securityContext|valueFrom|Selector|tolerations/items|"
                               r"topologySpreadConstraints/items|relabelings/items|"
                               r"metricRelabelings/items|properties/global)$", w)]
    r.check("every chart-defined object has additionalProperties: false", not opened, ", ".join(opened))
    r.run("default values pass the schema", lambda: chart.validate_schema(chart.merge_values({})))


# ---------------------------------------------------------------------------- rendering

def render(chart: Any, values: dict) -> tuple[list[dict], str, str]:
    out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objs: list[dict] = []
    text = []
    notes = ""
    for path, body in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = body
            continue
        text.append(body)
        for doc in yaml.safe_load_all(body):
            if doc:
                doc["_template"] = path
                objs.append(doc)
    return objs, "\n".join(text), notes


def pod_specs(objs: list[dict]) -> Iterator[tuple[str, dict, dict]]:
    """(name, pod spec, pod metadata) of every pod the release can create."""
    for o in objs:
        k = o["kind"]
        if k in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            t = o["spec"]["template"]
            yield f"{k}/{o['metadata']['name']}", t["spec"], t.get("metadata", {})
        elif k == "CronJob":
            t = o["spec"]["jobTemplate"]["spec"]["template"]
            yield f"{k}/{o['metadata']['name']}", t["spec"], t.get("metadata", {})
        elif k == "Pod":
            yield f"Pod/{o['metadata']['name']}", o["spec"], o["metadata"]


def hardening_problems(spec: dict) -> list[str]:
    p: list[str] = []
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True:
        p.append("pod runAsNonRoot")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        p.append("pod seccompProfile RuntimeDefault")
    if spec.get("automountServiceAccountToken") is not False:
        p.append("automountServiceAccountToken false")
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        p.append("host namespaces")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        n = c["name"]
        sc = c.get("securityContext") or {}
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            p.append(f"{n}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            p.append(f"{n}: runAsUser 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            p.append(f"{n}: readOnlyRootFilesystem")
        if sc.get("allowPrivilegeEscalation") is not False:
            p.append(f"{n}: allowPrivilegeEscalation false")
        if sc.get("privileged"):
            p.append(f"{n}: privileged")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            p.append(f"{n}: capabilities drop ALL")
        if (sc.get("capabilities") or {}).get("add"):
            p.append(f"{n}: capabilities add")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            p.append(f"{n}: seccomp RuntimeDefault")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in (res.get(kind) or {}):
                    p.append(f"{n}: resources.{kind}.{r}")
        img = c.get("image", "")
        if img.endswith(":latest") or (":" not in img.split("/")[-1] and "@" not in img):
            p.append(f"{n}: image pinned (not latest)")
    return p


def probe_problems(spec: dict, health_port: int) -> list[str]:
    p = []
    for c in spec["containers"]:
        ports = {x["name"]: x["containerPort"] for x in c.get("ports", [])}
        if ports.get("health") != health_port:
            p.append(f"{c['name']}: port health={health_port}")
        want = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}
        for probe, path in want.items():
            g = (c.get(probe) or {}).get("httpGet") or {}
            if g.get("port") != "health" or g.get("path") != path:
                p.append(f"{c['name']}: {probe} GET {path} on health (got {g})")
    return p


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def kube_validate(o: dict, version: str) -> str | None:
    clean = {k: v for k, v in o.items() if k != "_template"}
    try:
        kubernetes_validate.validate(clean, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(str(x) for x in e.path)}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError as e:
        return e.message
    return None


def check_servicemonitor(o: dict, objs: list[dict]) -> str | None:
    if o.get("apiVersion") != "monitoring.coreos.com/v1":
        return f"apiVersion {o.get('apiVersion')}"
    spec = o.get("spec") or {}
    allowed = {"jobLabel", "namespaceSelector", "selector", "endpoints", "targetLabels",
               "podTargetLabels", "sampleLimit"}
    if set(spec) - allowed:
        return f"unknown spec fields {set(spec) - allowed}"
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    svcs = [s for s in objs if s["kind"] == "Service"
            and sel.items() <= (s["metadata"].get("labels") or {}).items()]
    if not svcs:
        return f"selector {sel} matches no Service"
    for ep in spec.get("endpoints") or []:
        if set(ep) - {"port", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
                      "relabelings", "metricRelabelings"}:
            return f"unknown endpoint fields {set(ep)}"
        if ep.get("path") != "/metrics":
            return f"endpoint path {ep.get('path')}"
        with_port = [s["metadata"]["name"] for s in svcs
                     if any(p.get("name") == ep.get("port") for p in s["spec"]["ports"])]
        if not with_port:
            return f"no selected Service has a port named {ep.get('port')}"
        for s in svcs:
            for p in s["spec"]["ports"]:
                if p["name"] == ep["port"] and p["targetPort"] != "health":
                    return f"{s['metadata']['name']} scrapes {p['targetPort']}, not the health port"
    if not spec.get("endpoints"):
        return "no endpoints"
    return None


def check_rendering(r: Report, chart: Any, label: str, values: dict, kube: str) -> list[dict]:
    r.section(f"render: {label}")
    merged = chart.merge_values(values)
    r.run(f"[{label}] values pass the schema", lambda: chart.validate_schema(merged))
    objs, text, notes = render(chart, values)
    kinds = sorted({o["kind"] for o in objs})
    print(f"     rendered {len(objs)} objects: {', '.join(kinds)}")

    bad = []
    for o in objs:
        if o["kind"] in CRD_KINDS:
            continue
        err = kube_validate(o, kube)
        if err:
            bad.append(f"{o['kind']}/{o['metadata']['name']}: {err}")
    n = sum(o["kind"] not in CRD_KINDS for o in objs)
    r.check(f"[{label}] {n} objects valid for Kubernetes {kube} (kubernetes-validate, strict)",
            not bad, "; ".join(bad))
    for o in objs:
        if o["kind"] == "ServiceMonitor":
            r.check(f"[{label}] ServiceMonitor: CRD, schema skipped; shape checked",
                    check_servicemonitor(o, objs) is None, check_servicemonitor(o, objs) or "")

    want = {"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"}
    unlabelled = [f"{o['kind']}/{o['metadata']['name']}" for o in objs
                  if not want <= set((o["metadata"].get("labels") or {}))]
    r.check(f"[{label}] every object carries the app.kubernetes.io/* and helm.sh/chart labels",
            not unlabelled, ", ".join(unlabelled))
    wrong_ns = [f"{o['kind']}/{o['metadata']['name']}" for o in objs
                if o["metadata"].get("namespace") != NAMESPACE]
    r.check(f"[{label}] every object is in the release namespace", not wrong_ns, ", ".join(wrong_ns))

    pods = list(pod_specs(objs))
    for name, spec, meta in pods:
        probs = hardening_problems(spec)
        comp = (meta.get("labels") or {}).get("app.kubernetes.io/component")
        if not comp:
            probs.append("pod label app.kubernetes.io/component")
        if name.startswith("Deployment/"):
            probs += probe_problems(spec, merged["containerPorts"]["health"])
        r.check(f"[{label}] {name}: hardened (non-root, read-only root, no privilege escalation, "
                f"caps dropped, seccomp, resources{', probes' if name.startswith('Deployment/') else ''})",
                not probs, "; ".join(probs))
    kinds_with_pods = {n.split("/")[0] for n, _, _ in pods}
    r.check(f"[{label}] the test pod is among the hardened pods", "Pod" in kinds_with_pods)

    check_secrets(r, label, values, merged, objs, text)
    return objs


def check_secrets(r: Report, label: str, values: dict, merged: dict, objs: list[dict], text: str) -> None:
    leaks = []
    for name, spec, _ in pod_specs(objs):
        for c in spec["containers"]:
            env = env_of(c)
            for k in SECRET_ENV & env.keys():
                ref = (env[k].get("valueFrom") or {}).get("secretKeyRef")
                if not ref or "value" in env[k]:
                    leaks.append(f"{name}/{c['name']} {k} is not a secretKeyRef")
            url = env.get("KEYTRAP_DATABASE_URL", {}).get("value")
            if url and re.match(r"^postgres(ql)?://[^/@]*:[^/@]*@", url):
                leaks.append(f"{name}/{c['name']} KEYTRAP_DATABASE_URL holds a password")
            for a in c.get("args", []) + c.get("command", []):
                if re.search(r"master|token|password", a, re.I):
                    leaks.append(f"{name}/{c['name']} secret-looking argument {a}")
    r.check(f"[{label}] master key, admin token and database password reach pods only as secretKeyRef",
            not leaks, "; ".join(leaks))

    secrets = [o for o in objs if o["kind"] == "Secret"]
    if merged["auth"]["existingSecret"]:
        refs = {(e.get("valueFrom") or {}).get("secretKeyRef", {}).get("name")
                for _, spec, _ in pod_specs(objs) for c in spec["containers"]
                for e in c.get("env", []) if e["name"] in {"KEYTRAP_MASTER_KEY", "KEYTRAP_ADMIN_TOKEN"}}
        r.check(f"[{label}] auth.existingSecret: no Secret rendered, pods refer to {merged['auth']['existingSecret']}",
                not secrets and refs == {merged["auth"]["existingSecret"]}, f"secrets={len(secrets)} refs={refs}")
        shaped = re.findall(r"[A-Za-z0-9+/]{43}=|keytrap_[A-Za-z0-9]{32,}", text)
        r.check(f"[{label}] nothing shaped like a master key or admin token in the output",
                not shaped, str(shaped[:3]))
        return

    auth = [s for s in secrets if s["metadata"]["name"].endswith("-auth")]
    if not r.check(f"[{label}] one generated auth Secret", len(auth) == 1, f"{len(auth)}"):
        return
    s = auth[0]
    r.check(f"[{label}] the auth Secret is kept on uninstall (helm.sh/resource-policy: keep)",
            (s["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") == "keep")
    mk_b64 = s["data"][merged["auth"]["masterKeyKey"]]
    tok_b64 = s["data"][merged["auth"]["adminTokenKey"]]
    mk = base64.b64decode(mk_b64).decode()
    tok = base64.b64decode(tok_b64).decode()
    key_ok = len(mk) == 44 and len(base64.b64decode(mk, validate=True)) == 32
    r.check(f"[{label}] generated master key is 32 bytes in base64 (what KEYTRAP_MASTER_KEY reads)",
            key_ok, f"{len(mk)} chars")
    r.check(f"[{label}] generated admin token is 32-256 printable characters",
            32 <= len(tok) <= 256 and all(33 <= ord(ch) <= 126 for ch in tok), f"{len(tok)} chars")
    plain = [v for v in (mk, tok) if v in text]
    encoded = [v for v in (mk_b64, tok_b64) if text.count(v) != 1]
    r.check(f"[{label}] generated values appear only base64-encoded in their Secret, nowhere else",
            not plain and not encoded, f"plain={len(plain)} extra={len(encoded)}")
    in_values = json.dumps(merged)
    r.check(f"[{label}] generated values are not in the chart values", mk not in in_values and tok not in in_values)


# ---------------------------------------------------------------------------- per mode

def find(objs: list[dict], kind: str, suffix: str = "") -> list[dict]:
    return [o for o in objs if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]


def container(o: dict) -> dict:
    return o["spec"]["template"]["spec"]["containers"][0]


def check_distributed(r: Report, label: str, objs: list[dict], merged: dict) -> None:
    deps = {o["metadata"]["name"].rsplit("-", 1)[-1]: o for o in find(objs, "Deployment")}
    r.check(f"[{label}] Deployments api, trap, worker", set(deps) == {"api", "trap", "worker"}, str(set(deps)))
    for role, d in deps.items():
        r.check(f"[{label}] {role}: one image, `serve --role {role}`",
                container(d)["args"] == ["serve", "--role", role]
                and container(d)["image"] == container(deps["api"])["image"], str(container(d)["args"]))
        env = env_of(container(d))
        listen = {"api": "KEYTRAP_API_LISTEN", "trap": "KEYTRAP_TRAP_LISTEN"}.get(role)
        ok = env["KEYTRAP_HEALTH_LISTEN"]["value"] == f"0.0.0.0:{merged['containerPorts']['health']}"
        if listen:
            ok = ok and env[listen]["value"].startswith("0.0.0.0:")
        r.check(f"[{label}] {role}: listeners on 0.0.0.0 (KEYTRAP_HEALTH_LISTEN{', ' + listen if listen else ''})", ok)
    trap_ports = {p["name"] for p in container(deps["trap"])["ports"]}
    r.check(f"[{label}] trap container exposes only trap and health ports", trap_ports == {"trap", "health"}, str(trap_ports))
    jobs = find(objs, "Job", "-migrate")
    if merged["migration"]["enabled"]:
        ok = len(jobs) == 1
        if ok:
            ann = jobs[0]["metadata"]["annotations"]
            c = jobs[0]["spec"]["template"]["spec"]["containers"][0]
            ok = (ann.get("helm.sh/hook") == "pre-install,pre-upgrade" and c["args"] == ["migrate"]
                  and "KEYTRAP_DATABASE_URL" in env_of(c)
                  and not {"KEYTRAP_MASTER_KEY", "KEYTRAP_ADMIN_TOKEN"} & env_of(c).keys()
                  and jobs[0]["spec"]["template"]["spec"]["restartPolicy"] == "Never")
        r.check(f"[{label}] migration Job: pre-install,pre-upgrade hook running `keytrap migrate` (database only)", ok)
        if ok and merged["serviceAccount"]["create"]:
            r.check(f"[{label}] migration Job does not depend on the chart's ServiceAccount (hooks run before it exists)",
                    "serviceAccountName" not in jobs[0]["spec"]["template"]["spec"])


def check_allinone(r: Report, objs: list[dict], merged: dict, notes: str) -> None:
    label = "allinone"
    deps = find(objs, "Deployment")
    r.check(f"[{label}] exactly one Deployment, 1 replica, Recreate",
            len(deps) == 1 and deps[0]["spec"]["replicas"] == 1
            and deps[0]["spec"]["strategy"]["type"] == "Recreate", str([d["metadata"]["name"] for d in deps]))
    if deps:
        c = container(deps[0])
        env = env_of(c)
        r.check(f"[{label}] runs every configured role in one process",
                c["args"] == ["serve", "--role", ",".join(merged["allinone"]["roles"])], str(c["args"]))
        r.check(f"[{label}] SQLite on the data volume",
                env["KEYTRAP_DATABASE_URL"]["value"].startswith("sqlite:///data/")
                and any(m["mountPath"] == "/data" for m in c["volumeMounts"]))
        vols = {v["name"]: v for v in deps[0]["spec"]["template"]["spec"]["volumes"]}
        pvcs = find(objs, "PersistentVolumeClaim")
        r.check(f"[{label}] the data volume is the chart's PersistentVolumeClaim",
                len(pvcs) == 1 and vols["data"].get("persistentVolumeClaim", {}).get("claimName")
                == pvcs[0]["metadata"]["name"])
    for kind in ("HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"):
        r.check(f"[{label}] no {kind} (asked for in the values, turned off by the mode)", not find(objs, kind))
    r.check(f"[{label}] NOTES.txt says HPA and PDB are off", "HorizontalPodAutoscaler" in notes
            and "PodDisruptionBudgets are turned off" in notes)
    svc = {s["metadata"]["name"]: s for s in find(objs, "Service")}
    comps = {s["spec"]["selector"].get("app.kubernetes.io/component") for s in svc.values()}
    r.check(f"[{label}] every Service selects the all-in-one pod", comps == {"allinone"}, str(comps))
    health = [n for n, s in svc.items() if any(p["name"] == "health" for p in s["spec"]["ports"])]
    r.check(f"[{label}] the health port is on one Service only (scraped once)", len(health) == 1, str(health))


def check_production(r: Report, objs: list[dict], merged: dict) -> None:
    label = "production"
    check_distributed(r, label, objs, merged)
    trap = find(objs, "Deployment", "-trap")[0]
    hpa = find(objs, "HorizontalPodAutoscaler")
    r.check(f"[{label}] HPA scales the trap Deployment, which leaves replicas to it",
            len(hpa) == 1 and hpa[0]["spec"]["scaleTargetRef"]["name"] == trap["metadata"]["name"]
            and "replicas" not in trap["spec"])
    pdbs = {p["metadata"]["name"].rsplit("-", 1)[-1]: p for p in find(objs, "PodDisruptionBudget")}
    r.check(f"[{label}] PDBs for api, trap (minAvailable 2), worker",
            set(pdbs) == {"api", "trap", "worker"} and pdbs["trap"]["spec"].get("minAvailable") == 2, str(set(pdbs)))

    hosts = merged["trap"]["hosts"]
    env = env_of(container(trap))
    want = ",".join(f"{h['host'].lower()}={h['exchange']}" for h in hosts)
    r.check(f"[{label}] KEYTRAP_TRAP_HOSTS maps every trap host to its exchange",
            env.get("KEYTRAP_TRAP_HOSTS", {}).get("value") == want
            and {h["exchange"] for h in hosts} == EXCHANGES)
    r.check(f"[{label}] KEYTRAP_TRUSTED_PROXIES from trap.trustedProxies",
            env.get("KEYTRAP_TRUSTED_PROXIES", {}).get("value") == ",".join(merged["trap"]["trustedProxies"]))
    ing = find(objs, "Ingress", "-trap")
    ok = len(ing) == 1
    if ok:
        rules = ing[0]["spec"]["rules"]
        backends = {(p["backend"]["service"]["name"], p["backend"]["service"]["port"].get("name"))
                    for ru in rules for p in ru["http"]["paths"]}
        ok = ([ru["host"] for ru in rules] == [h["host"] for h in hosts]
              and backends == {(trap["metadata"]["name"], "trap")})
    r.check(f"[{label}] trap Ingress: one rule per exchange host, all to the trap port (not health)", ok)
    r.check(f"[{label}] API Ingress present (internal class)", len(find(objs, "Ingress", "-api")) == 1)

    pols = {p["metadata"]["name"].rsplit("-", 1)[-1]: p for p in find(objs, "NetworkPolicy")}
    r.check(f"[{label}] NetworkPolicies for api, trap, worker, migrate, test",
            set(pols) == {"api", "trap", "worker", "migrate", "test"}, str(set(pols)))
    db_port = merged["externalDatabase"]["port"]
    allowed = {(53, "UDP"), (53, "TCP"), (db_port, "TCP")}
    for role in ("api", "trap", "migrate"):
        if role not in pols:
            continue
        eg = pols[role]["spec"].get("egress", [])
        probs = []
        for rule in eg:
            ports = {(p["port"], p.get("protocol", "TCP")) for p in rule.get("ports", [])}
            if not ports or not ports <= allowed:
                probs.append(f"rule with ports {ports or 'any'}")
            if (db_port, "TCP") in ports and rule.get("to") != merged["networkPolicy"]["databaseTo"]:
                probs.append(f"database rule to {rule.get('to')}")
            if (53, "UDP") in ports and not rule.get("to"):
                probs.append("DNS to anywhere")
        r.check(f"[{label}] {role}: egress only to DNS and the database ({merged['networkPolicy']['databaseTo'][0]['ipBlock']['cidr']}:{db_port})",
                not probs and "Egress" in pols[role]["spec"]["policyTypes"], "; ".join(probs))
    if "worker" in pols:
        nets: list[tuple[Any, list[Any]]] = []
        for rule in pols["worker"]["spec"]["egress"]:
            for peer in rule.get("to", []):
                b = peer.get("ipBlock")
                if b:
                    nets.append((ipaddress.ip_network(b["cidr"]), [ipaddress.ip_network(x) for x in b.get("except", [])]))

        def reachable(addr: str) -> bool:
            a = ipaddress.ip_address(addr)
            return any(a in net and not any(a in ex for ex in exc) for net, exc in nets)

        blocked = ["169.254.169.254", "10.96.0.1", "10.244.3.7", "172.20.0.10", "192.168.1.1",
                   "100.64.0.1", "127.0.0.1", "fd00:ec2::254", "fe80::1"]
        open_ = ["1.1.1.1", "8.8.8.8", "2606:4700::1111"]
        bad = [a for a in blocked if reachable(a)] + [f"!{a}" for a in open_ if not reachable(a)]
        r.check(f"[{label}] worker: internet yes, cluster-internal ranges and 169.254.169.254 no", not bad, str(bad))
    api_pol = pols.get("api")
    if api_pol:
        froms = [ru.get("from") for ru in api_pol["spec"]["ingress"]
                 if any(p["port"] == merged["containerPorts"]["api"] for p in ru["ports"])]
        r.check(f"[{label}] api: ingress restricted to networkPolicy.apiFrom (+ the test pod)",
                froms and all(froms), str(froms))
    r.check(f"[{label}] ServiceMonitor rendered", len(find(objs, "ServiceMonitor")) == 1)


def check_test_pod(r: Report, label: str, objs: list[dict]) -> None:
    pods = find(objs, "Pod", "-test")
    if not r.check(f"[{label}] helm test pod exists with the test hook",
                   len(pods) == 1 and pods[0]["metadata"]["annotations"].get("helm.sh/hook") == "test"):
        return
    svcs = {s["metadata"]["name"]: {p["port"] for p in s["spec"]["ports"]} for s in find(objs, "Service")}
    probs = []
    for c in pods[0]["spec"]["containers"]:
        url = c["args"][-1]
        m = re.match(r"http://([^:/]+):(\d+)/", url)
        if c.get("command") != ["curl"] or not m or int(m.group(2)) not in svcs.get(m.group(1), set()):
            probs.append(f"{c['name']} -> {url}")
    r.check(f"[{label}] helm test checks target rendered Services and ports ({len(pods[0]['spec']['containers'])} checks)",
            not probs, "; ".join(probs))


# ---------------------------------------------------------------------------- refusals

def check_refusals(r: Report, chart: Any) -> None:
    r.section("invalid values are refused")
    cases = [
        ("mode: cluster (unknown mode)", {"mode": "cluster"}),
        ("api.replicaCount: \"two\" (wrong type)", {"api": {"replicaCount": "two"}}),
        ("trap.enabled: \"yes\" (wrong type)", {"trap": {"enabled": "yes"}}),
        ("containerPorts.health: 70000 (out of range)", {"containerPorts": {"health": 70000}}),
        ("allinone.roles: [api, miner] (unknown role)", {"mode": "allinone", "allinone": {"roles": ["api", "miner"]}}),
        ("allinone.roles: [] (no role)", {"mode": "allinone", "allinone": {"roles": []}}),
        ("trap.hosts exchange ftx (unknown exchange)", {"trap": {"hosts": [{"host": "api.ftx.example", "exchange": "ftx"}]}}),
        ("trap.hosts host with a path", {"trap": {"hosts": [{"host": "x.example/api", "exchange": "binance"}]}}),
        ("api.replicas (unknown key, typo)", {"api": {"replicas": 3}}),
        ("auth.masterKey (a plain secret value)", {"auth": {"masterKey": "SENTINEL-0123456789abcdef0123456789abcdef"}}),
        ("auth.adminToken (a plain secret value)", {"auth": {"adminToken": "SENTINEL-keytrap-admin-token-value-000"}}),
        ("externalDatabase.password (a plain secret value)", {"externalDatabase": {"password": "SENTINEL"}}),
        ("externalDatabase.url (URLs come from a Secret)", {"externalDatabase": {"url": "postgres://u:SENTINEL@h/db"}}),
        ("externalDatabase.sslMode: always", {"externalDatabase": {"sslMode": "always"}}),
        ("config.logFormat: xml", {"config": {"logFormat": "xml"}}),
        ("trap.trustedProxies: not a CIDR", {"trap": {"trustedProxies": ["10.0.0.0/8; rm"]}}),
        ("trap.pdb.minAvailable: \"half\"", {"trap": {"pdb": {"create": True, "minAvailable": "half"}}}),
        ("image.digest: not sha256", {"image": {"digest": "md5:abc"}}),
        ("top-level unknown key", {"replicaCount": 3}),
    ]
    for desc, vals in cases:
        def refused(vals: dict = vals) -> str | None:
            try:
                chart.validate_schema(chart.merge_values(vals))
            except helm.HelmValuesError as e:
                try:
                    chart.render(vals, name=RELEASE, namespace=NAMESPACE)
                except helm.HelmError:
                    first = str(e).strip().splitlines()[-1].strip()
                    print(f"     refused: {first}")
                    return None
                return "schema refused it but render accepted it"
            return "accepted"
        r.run(f"schema refuses {desc}", refused)

    r.section("template-level mistakes fail the render with a message")
    for desc, vals, needle in [
        ("trap Ingress without trap.hosts", {"trap": {"ingress": {"enabled": True}}}, "trap.hosts"),
        ("distributed mode without a database host", {"externalDatabase": {"host": ""}}, "externalDatabase.host"),
        ("URL key without its Secret", {"externalDatabase": {"existingSecretUrlKey": "url"}}, "externalDatabase.existingSecret"),
    ]:
        def fails(vals: dict = vals, needle: str = needle) -> str | None:
            try:
                chart.render(vals, name=RELEASE, namespace=NAMESPACE)
            except helm.HelmError as e:
                return None if needle in str(e) else f"error without {needle!r}: {e}"
            return "rendered"
        r.run(f"render fails clearly: {desc}", fails)


# ---------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kube-version", default=kubernetes_validate.utils.latest_version(),
                    help="Kubernetes version to validate against (default: the newest kubernetes-validate knows)")
    ap.add_argument("--docker-build", action="store_true",
                    help=f"also run `{BUILD_COMMAND}` in the simulated build context (slow)")
    args = ap.parse_args()
    kube = args.kube_version.lstrip("v")
    r = Report()
    print(f"helm SDK {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__ if hasattr(kubernetes_validate, '__version__') else ''} "
          f"against Kubernetes {kube}")

    check_docker(r, args.docker_build)

    r.section("helm lint --strict")
    for label, vals in [("default", {})] + [
            (f.name, yaml.safe_load(f.read_text())) for f in sorted((CHART / "ci").glob("*.yaml"))]:
        rep = helm.lint(str(CHART), vals, strict=True, kube_version=f"v{kube}")
        msgs = [m for m in rep["messages"] if m["severity"] >= 2] + [{"error": e} for e in rep["errors"]]
        info = [m["error"] for m in rep["messages"] if m["severity"] < 2]
        r.check(f"helm lint --strict ({label})", not msgs,
                "; ".join(m.get("error", "") for m in msgs))
        if info and label == "default":
            print(f"     info: {'; '.join(info)}")

    chart = helm.Chart.load(str(CHART))
    check_schema(r, chart)

    sets = {
        "default": {},
        "allinone": yaml.safe_load((CHART / "ci" / "allinone-values.yaml").read_text()),
        "production": yaml.safe_load((CHART / "ci" / "production-values.yaml").read_text()),
    }
    for label, vals in sets.items():
        try:
            objs = check_rendering(r, chart, label, copy.deepcopy(vals), kube)
        except helm.HelmError as e:
            r.check(f"[{label}] renders", False, str(e))
            continue
        merged = chart.merge_values(vals)
        _, _, notes = render(chart, vals)
        check_test_pod(r, label, objs)
        if label == "default":
            check_distributed(r, label, objs, merged)
            again = [o for o in render(chart, vals)[0] if o["kind"] == "Secret"]
            first = [o for o in objs if o["kind"] == "Secret"]
            r.check("[default] an offline render (lookup finds nothing) generates fresh values, not values from the chart",
                    bool(first) and first[0]["data"] != again[0]["data"])
        elif label == "allinone":
            check_allinone(r, objs, merged, notes)
        else:
            check_production(r, objs, merged)

    check_refusals(r, chart)

    print()
    if r.failed:
        print("failed checks:\n  " + "\n  ".join(r.failed))
    print(f"{r.passed} passed, {len(r.failed)} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
