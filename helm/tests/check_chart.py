#!/usr/bin/env python3
"""Offline checks of the Weft Helm chart (helm/weft).

    python3 helm/tests/check_chart.py [--coordinator-bin PATH --worker-bin PATH]
    python3 helm/tests/check_chart.py --facts-json

What it checks, with no cluster, no helm binary and no network:

  1. `helm lint --strict` (Helm's own linter, through helm-python-sdk) for every
     value set in helm/tests/values/: any warning or error fails. The chart has
     no dependencies (NATS is installed separately), so there is nothing the
     linter may miss.
  2. Renders the chart with each value set (release "weft", namespace "weft"),
     and checks that the fail-*.yaml sets do NOT render, with a clear message.
  3. Validates every rendered manifest against the Kubernetes 1.30 JSON schemas
     (kubernetes-validate, strict: unknown fields are errors). The two CRD kinds
     (ServiceMonitor, ScaledObject) are not in those schemas: they are named
     below and their shape is checked here instead.
  4. Asserts the facts that must hold: probes on /healthz and /readyz, ports
     8080 (coordinator http) and 9091 (worker metrics) by default and the
     WEFT_*_ADDR variables on the same ports, worker terminationGracePeriodSeconds
     above the drain grace, every WEFT_* variable a real config field, the
     security context, HPA/KEDA exclusive, dashboard ConfigMap iff enabled, the
     dashboard's JSON and PromQL; the admin token (required) and the encryption
     key reach the coordinator only through a Secret (the chart's, holding
     exactly the values given, or the existing one named), and their values
     appear in no ConfigMap, no other manifest and not in NOTES.txt.

WEFT_* names and default ports are checked against the binaries when
--coordinator-bin/--worker-bin are given (`<bin> --print-config`, run with an
environment holding only PATH, plus a placeholder WEFT_ADMIN_TOKEN for the
coordinator, which refuses to load its config without one), else against the
config structs in coordinator/src/config.rs and worker/src/config.rs.

--facts-json prints {"coordinator": {"port", "paths"}, "worker": {...}} from the
rendered defaults, for a test that starts the real binaries and GETs each path.

Exit status: 0 all passed, 1 a check failed, 2 the tools are missing.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CHART = HERE.parent / "weft"
REPO = HERE.parent.parent
VALUES_DIR = HERE / "values"
TOOLS_PYTHON = Path(os.environ.get("WEFT_TOOLS_DIR", Path.home() / ".cache" / "weft")) / "venv" / "bin" / "python"

try:
    import helm_python as helm
    import kubernetes_validate
    import promql_parser
    import yaml
except ImportError as e:  # Re-run under the tools venv when it has the packages.
    if TOOLS_PYTHON.exists() and Path(sys.executable) != TOOLS_PYTHON and not os.environ.get("WEFT_CHECK_CHART_REEXEC"):
        os.environ["WEFT_CHECK_CHART_REEXEC"] = "1"
        os.execv(str(TOOLS_PYTHON), [str(TOOLS_PYTHON), __file__, *sys.argv[1:]])
    print(
        f"check_chart: missing Python package ({e.name}). Install the pinned tools with\n"
        f"  python3 -m venv {TOOLS_PYTHON.parent.parent} && "
        f"{TOOLS_PYTHON.parent / 'pip'} install -r helm/tests/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(2)

RELEASE = "weft"
# The default nats.url: the client Service of the official NATS chart installed
# as release "nats" in the same namespace.
DEFAULT_NATS_URL = "nats://nats:4222"
NAMESPACE = "weft"
KUBE_VERSION = "1.30"

# Value sets that must render, in helm/tests/values/<name>.yaml.
VALUE_SETS = ["defaults", "nats-custom-url", "keda", "dashboard-off", "servicemonitor", "overrides", "admin-token-secret"]
# Value sets that must fail to render, with (part of) the message the user sees.
MUST_FAIL = {
    "fail-hpa-and-keda": "autoscaling.hpa.enabled and autoscaling.keda.enabled are mutually exclusive",
    "fail-nats-empty-url": "nats.url is required",
    "fail-nats-blank-url": "nats.url is required",
    # The coordinator exits at start without an admin token: a crash loop.
    "fail-no-admin-token": "adminToken or adminTokenSecret.name is required",
    "fail-admin-token-blank": "adminToken or adminTokenSecret.name is required",
    "fail-admin-token-short": "adminToken must be at least 24 characters",
    "fail-admin-token-and-secret": "set either adminToken or adminTokenSecret.name, not both",
}

# CRDs: not in the Kubernetes schemas, so skipped there BY NAME and checked by
# check_servicemonitor / check_scaledobject below. Any other kind without a
# schema is a failure.
CRD_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "ScaledObject": "keda.sh/v1alpha1"}

# WEFT_* variables the chart may set that --print-config does not list:
# WEFT_CONFIG is the --config flag's variable (clap), not a config field.
ALLOWED_EXTRA_ENV = {"coordinator": {"WEFT_CONFIG"}, "worker": {"WEFT_CONFIG"}}

# Environment for `<bin> --print-config` besides PATH: the coordinator refuses
# to load its configuration without an admin token (exit 64), so it gets a
# placeholder (at least 24 characters; printed redacted).
PRINT_CONFIG_ENV = {"coordinator": {"WEFT_ADMIN_TOKEN": "check-chart-print-config-placeholder"}, "worker": {}}

# Coordinator settings that are secrets: (variable, value key, existing-Secret
# value key, key in the chart's Secret, required). Each reaches the coordinator
# only as a secretKeyRef: to the chart's Secret when given in values, to the
# existing Secret when its name is set.
SECRET_SETTINGS = [
    ("WEFT_ADMIN_TOKEN", "adminToken", "adminTokenSecret", "admin-token", True),
    ("WEFT_ENCRYPTION_KEY", "encryptionKey", "encryptionKeySecret", "encryption-key", False),
]

# Metrics the dashboard may use besides those in coordinator/src/metrics.rs and
# worker/src/metrics.rs: added by a later issue (AI model nodes).
EXTRA_METRICS = {"weft_model_request_duration_seconds": "histogram", "weft_model_tokens_total": "counter"}
# Metrics the dashboard must show (the panels the issue asks for).
DASHBOARD_MUST_USE = {
    "weft_runs_completed_total", "weft_run_duration_seconds_bucket", "weft_timeouts_total",
    "weft_worker_inflight_runs", "weft_worker_capacity", "weft_pending_runs",
    "weft_pending_oldest_age_seconds", "weft_node_duration_seconds_bucket",
    "weft_model_request_duration_seconds_bucket", "weft_model_tokens_total", "weft_http_requests_total",
}

# Where the binaries serve each path (a source-level check of the facts).
ROUTE_SOURCES = {"coordinator": REPO / "coordinator/src/api/mod.rs", "worker": REPO / "worker/src/lib.rs"}
CONFIG_SOURCES = {
    "coordinator": (REPO / "coordinator/src/config.rs", "CoordinatorConfig", "http_addr"),
    "worker": (REPO / "worker/src/config.rs", "WorkerConfig", "metrics_addr"),
}
METRICS_SOURCES = [REPO / "coordinator/src/metrics.rs", REPO / "worker/src/metrics.rs"]


class Checks:
    """Collects failures so one run reports all of them."""

    def __init__(self) -> None:
        self.failures: list[str] = []
        self.notes: list[str] = []

    def fail(self, where: str, msg: str) -> None:
        self.failures.append(f"{where}: {msg}")

    def expect(self, cond: bool, where: str, msg: str) -> bool:
        if not cond:
            self.fail(where, msg)
        return cond


# --------------------------------------------------------------------------- helpers


def load_values(name: str) -> dict:
    path = VALUES_DIR / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    return data or {}


def render(values: dict) -> dict[str, str]:
    # A fresh load per render, so nothing one render does to the loaded chart
    # leaks into the next value set.
    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def merged_values(values: dict) -> dict:
    with helm.Chart.load(str(CHART)) as chart:
        return chart.merge_values(values)


def documents(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """(template, manifest) for every non-empty YAML document; NOTES.txt aside."""
    out = []
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((template, doc))
    return out


def port_of(addr: str) -> int | None:
    m = re.fullmatch(r".*:(\d+)", addr or "")
    return int(m.group(1)) if m else None


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def find(docs, kind: str, component: str | None = None) -> list[dict]:
    return [
        d for _, d in docs
        if d.get("kind") == kind
        and (component is None or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)
    ]


def one(c: Checks, where: str, items: list[dict], what: str) -> dict | None:
    if len(items) != 1:
        c.fail(where, f"expected exactly one {what}, found {len(items)}")
        return None
    return items[0]


def container_env(c: Checks, where: str, docs, container: dict) -> dict[str, object]:
    """Every variable a container gets: envFrom ConfigMaps (which must be
    rendered) and env entries (values, or the secretKeyRef for secrets)."""
    env: dict[str, object] = {}
    configmaps = {d["metadata"]["name"]: d for d in find(docs, "ConfigMap")}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            name = src["configMapRef"]["name"]
            if c.expect(name in configmaps, where, f"envFrom ConfigMap {name} is not rendered"):
                env.update(configmaps[name].get("data", {}))
        else:
            c.fail(where, f"unexpected envFrom source {src}")
    for e in container.get("env", []):
        env[e["name"]] = e.get("value", e.get("valueFrom"))
    return env


# ------------------------------------------------------------- config of the binaries


def parse_print_config(text: str) -> dict[str, object]:
    """`key = value` lines; values JSON (strings quoted, numbers and bools bare)."""
    out: dict[str, object] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = re.fullmatch(r"([a-z][a-z0-9_]*) = (.*)", line.strip())
        if not m:
            raise ValueError(f"line {n} is not `key = value`: {line!r}")
        try:
            out[m.group(1)] = json.loads(m.group(2))
        except json.JSONDecodeError as e:
            raise ValueError(f"line {n}: value is not JSON: {m.group(2)!r} ({e})") from None
    if not out:
        raise ValueError("no `key = value` lines")
    return out


def config_from_binary(component: str, path: str) -> dict[str, object]:
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), **PRINT_CONFIG_ENV[component]}
    try:
        p = subprocess.run([path, "--print-config"], env=env, capture_output=True, text=True, timeout=60)
    except OSError as e:
        raise ValueError(f"cannot run {path} --print-config: {e}") from None
    except subprocess.TimeoutExpired:
        raise ValueError(f"{path} --print-config did not exit within 60 s") from None
    if p.returncode != 0:
        raise ValueError(f"{path} --print-config exited {p.returncode}: {p.stderr.strip()}")
    return parse_print_config(p.stdout)


def config_from_source(component: str) -> dict[str, object]:
    """Field names of the config struct, and the default listen address, read
    from the Rust source (used when no binary is given)."""
    path, struct, addr_field = CONFIG_SOURCES[component]
    src = path.read_text()
    m = re.search(r"pub struct " + struct + r"\s*\{(.*?)\n\}", src, re.S)
    if not m:
        raise ValueError(f"{path}: struct {struct} not found")
    fields = re.findall(r"^\s*pub\s+(\w+)\s*:", m.group(1), re.M)
    if re.search(r"#\[serde\((?:[^)]*\b)?rename", m.group(0)):
        raise ValueError(f"{path}: serde renames in {struct}; read the names from --print-config instead")
    out: dict[str, object] = {f: None for f in fields}
    d = re.search(addr_field + r':\s*"([^"]*)"', src)
    if not d:
        raise ValueError(f"{path}: default of {addr_field} not found")
    out[addr_field] = d.group(1)
    return out


# ------------------------------------------------------------------------ CRD shapes


def check_servicemonitor(c: Checks, where: str, sm: dict, docs) -> None:
    spec = sm.get("spec") or {}
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    c.expect(bool(sel), where, "spec.selector.matchLabels is empty")
    services = [s for s in find(docs, "Service") if labels_match(sel, s["metadata"].get("labels", {}))]
    c.expect(len(services) == 1, where, f"selector {sel} matches {len(services)} rendered Services, want 1")
    endpoints = spec.get("endpoints")
    if not c.expect(isinstance(endpoints, list) and endpoints, where, "spec.endpoints is empty"):
        return
    for ep in endpoints:
        c.expect(isinstance(ep.get("port"), str), where, f"endpoint port must be a port name: {ep}")
        c.expect(ep.get("path") == "/metrics", where, f"endpoint path {ep.get('path')!r}, want /metrics")
        for key in ("interval", "scrapeTimeout"):
            if key in ep:
                c.expect(re.fullmatch(r"\d+(ms|s|m|h)", str(ep[key])) is not None, where, f"{key} {ep[key]!r} is not a duration")
        for s in services:
            names = [p.get("name") for p in s["spec"]["ports"]]
            c.expect(ep.get("port") in names, where, f"port {ep.get('port')!r} not on Service {s['metadata']['name']} ({names})")


def check_scaledobject(c: Checks, where: str, so: dict, docs, allowed_metrics: set[str]) -> None:
    spec = so.get("spec") or {}
    target = spec.get("scaleTargetRef") or {}
    workers = find(docs, "Deployment", "worker")
    c.expect(bool(workers) and target.get("name") == workers[0]["metadata"]["name"], where,
             f"scaleTargetRef {target} is not the worker Deployment")
    lo, hi = spec.get("minReplicaCount"), spec.get("maxReplicaCount")
    c.expect(isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and hi >= 1, where,
             f"minReplicaCount {lo!r} / maxReplicaCount {hi!r} must be integers with 0 <= min <= max, max >= 1")
    for key in ("pollingInterval", "cooldownPeriod"):
        if key in spec:
            c.expect(isinstance(spec[key], int) and spec[key] > 0, where, f"{key} must be a positive integer")
    triggers = spec.get("triggers")
    if not c.expect(isinstance(triggers, list) and triggers, where, "spec.triggers is empty"):
        return
    for t in triggers:
        c.expect(t.get("type") == "prometheus", where, f"trigger type {t.get('type')!r}, want prometheus")
        md = t.get("metadata") or {}
        for key in ("serverAddress", "query", "threshold"):
            c.expect(isinstance(md.get(key), str) and md[key] != "", where, f"trigger metadata.{key} must be a non-empty string")
        for key in ("threshold", "activationThreshold"):
            if key in md:
                c.expect(re.fullmatch(r"\d+(\.\d+)?", str(md[key])) is not None, where, f"{key} {md[key]!r} is not a number string")
        c.expect(re.match(r"https?://", md.get("serverAddress", "")) is not None, where, "serverAddress is not an http(s) URL")
        names = promql_metrics(c, where + " query", md.get("query", ""))
        c.expect("weft_pending_runs" in names, where, "query does not use weft_pending_runs")
        for n in sorted(names - allowed_metrics):
            c.fail(where, f"query uses {n}, which no metrics.rs defines")


# ------------------------------------------------------------------ PromQL / dashboard


def allowed_metric_names() -> set[str]:
    """Exported series names: consts of the metrics.rs files (histograms as
    _bucket/_sum/_count), plus EXTRA_METRICS."""
    kinds: dict[str, str] = dict(EXTRA_METRICS)
    for path in METRICS_SOURCES:
        src = path.read_text()
        consts = dict(re.findall(r'pub const (\w+): &str = "(weft_\w+)";', src))
        for kind, const in re.findall(r"describe_(counter|gauge|histogram)!\(\s*(\w+)", src):
            kinds[consts[const]] = kind
        for const, name in consts.items():
            kinds.setdefault(name, "unknown")
    names: set[str] = set()
    for name, kind in kinds.items():
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


def promql_metrics(c: Checks, where: str, expr: str) -> set[str]:
    """Parses a PromQL expression (Grafana's $__ interval variables replaced by
    a duration) and returns the metric names it selects."""
    text = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
    try:
        ast = promql_parser.parse(text)
    except Exception as e:  # the parser raises ValueError with the reason
        c.fail(where, f"invalid PromQL {expr!r}: {e}")
        return set()
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            else:
                c.fail(where, f"selector without a metric name in {expr!r}")
        return True

    promql_parser.walk(ast, visit)
    return names


def check_dashboard(c: Checks, text: str, allowed: set[str]) -> int:
    where = "dashboards/weft.json"
    try:
        dash = json.loads(text)
    except json.JSONDecodeError as e:
        c.fail(where, f"not JSON: {e}")
        return 0
    c.expect(isinstance(dash.get("schemaVersion"), int) and 36 <= dash["schemaVersion"] <= 41, where,
             f"schemaVersion {dash.get('schemaVersion')!r}, want about 39")
    c.expect(bool(dash.get("uid")) and bool(dash.get("title")), where, "uid and title are required")
    variables = {v.get("name"): v for v in (dash.get("templating") or {}).get("list", [])}
    ds = variables.get("datasource") or {}
    c.expect(ds.get("type") == "datasource" and ds.get("query") == "prometheus", where,
             "a `datasource` variable of type datasource, query prometheus, is required")
    wf = variables.get("workflow") or {}
    q = wf.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    c.expect(wf.get("type") == "query" and q == "label_values(weft_runs_started_total, workflow)", where,
             f"`workflow` variable query {q!r}, want label_values(weft_runs_started_total, workflow)")
    c.expect((wf.get("datasource") or {}).get("uid") == "${datasource}", where, "`workflow` variable must use ${datasource}")

    panels = []
    for p in dash.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))  # panels inside collapsed rows
    ids = [p.get("id") for p in panels]
    c.expect(len(ids) == len(set(ids)), where, "panel ids are not unique")
    used: set[str] = set()
    exprs = 0
    for p in panels:
        if p.get("type") == "row":
            continue
        pw = f"{where} panel {p.get('title')!r}"
        c.expect((p.get("datasource") or {}).get("uid") == "${datasource}", pw, "datasource must be ${datasource}")
        targets = p.get("targets") or []
        c.expect(bool(targets), pw, "no targets")
        for t in targets:
            c.expect((t.get("datasource") or {}).get("uid") == "${datasource}", pw, "target datasource must be ${datasource}")
            names = promql_metrics(c, pw, t.get("expr", ""))
            exprs += 1
            for n in sorted(names - allowed):
                c.fail(pw, f"uses {n}, which neither metrics.rs defines nor EXTRA_METRICS lists")
            used |= names
    for n in sorted(DASHBOARD_MUST_USE - used):
        c.fail(where, f"no panel shows {n}")
    return exprs


# ------------------------------------------------------------------ facts per value set


def check_pod_security(c: Checks, where: str, dep: dict) -> None:
    pod = dep["spec"]["template"]["spec"]
    psc = pod.get("securityContext") or {}
    c.expect(psc.get("runAsNonRoot") is True, where, "pod securityContext.runAsNonRoot must be true")
    c.expect((psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault", where, "seccompProfile must be RuntimeDefault")
    c.expect(pod.get("automountServiceAccountToken") is False, where, "automountServiceAccountToken must be false")
    tmp_volumes = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    for ct in pod["containers"]:
        cw = f"{where} container {ct['name']}"
        sc = ct.get("securityContext") or {}
        c.expect(sc.get("readOnlyRootFilesystem") is True, cw, "readOnlyRootFilesystem must be true")
        c.expect(sc.get("allowPrivilegeEscalation") is False, cw, "allowPrivilegeEscalation must be false")
        c.expect("ALL" in ((sc.get("capabilities") or {}).get("drop") or []), cw, "capabilities must drop ALL")
        c.expect(any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in ct.get("volumeMounts", [])), cw,
                 "/tmp must be an emptyDir (the root filesystem is read-only)")
        res = ct.get("resources") or {}
        for part in ("requests", "limits"):
            for r in ("cpu", "memory"):
                c.expect(r in (res.get(part) or {}), cw, f"resources.{part}.{r} is required")


def check_component(c: Checks, where: str, docs, component: str, port_name: str, want_port: int,
                    addr_var: str, grace_var: str) -> dict:
    """Checks one component's Deployment; returns its facts."""
    w = f"{where} {component}"
    dep = one(c, w, find(docs, "Deployment", component), f"{component} Deployment")
    if dep is None:
        return {}
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"].get("labels", {})
    c.expect(labels_match(dep["spec"]["selector"]["matchLabels"], pod_labels), w, "selector does not match its pod labels")
    check_pod_security(c, w, dep)
    ct = one(c, w, pod["containers"], "container")
    if ct is None:
        return {}
    ports = {p.get("name"): p.get("containerPort") for p in ct.get("ports", [])}
    port = ports.get(port_name)
    c.expect(port == want_port, w, f"container port {port_name} is {port}, want {want_port}")
    paths = {}
    for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = (ct.get(probe) or {}).get("httpGet") or {}
        c.expect(get.get("path") == want, w, f"{probe} path {get.get('path')!r}, want {want}")
        c.expect(get.get("port") in (port_name, port), w, f"{probe} port {get.get('port')!r}, want {port_name}")
        paths[probe] = get.get("path")
    env = container_env(c, w, docs, ct)
    c.expect(port_of(str(env.get(addr_var, ""))) == port, w, f"{addr_var}={env.get(addr_var)!r} is not on the container port {port}")
    grace_ms = int(env.get(grace_var, "0"))
    tgps = pod.get("terminationGracePeriodSeconds")
    c.expect(isinstance(tgps, int) and tgps > grace_ms / 1000, w,
             f"terminationGracePeriodSeconds {tgps} must exceed {grace_var} ({grace_ms} ms)")
    sa = pod.get("serviceAccountName")
    if find(docs, "ServiceAccount"):
        c.expect(sa in [s["metadata"]["name"] for s in find(docs, "ServiceAccount")], w, f"ServiceAccount {sa} not rendered")
    # The Service in front of (or beside) the pods must select them and use the named port.
    svc = one(c, w, find(docs, "Service", component), f"{component} Service")
    if svc is not None:
        c.expect(labels_match(svc["spec"]["selector"], pod_labels), w, "Service selector does not match the pods")
        c.expect(any(p.get("targetPort") in (port_name, port) for p in svc["spec"]["ports"]), w,
                 f"Service does not target port {port_name}")
    return {"deployment": dep, "pod": pod, "container": ct, "env": env, "port": port, "paths": paths, "labels": pod_labels}


def check_value_set(c: Checks, name: str, values: dict, allowed_metrics: set[str], dashboard_text: str) -> tuple[list, dict]:
    where = f"[{name}]"
    try:
        rendered = render(values)
    except helm.HelmError as e:
        c.fail(where, f"does not render: {e}")
        return [], {}
    v = merged_values(values)
    docs = documents(rendered)
    notes = next((t for k, t in rendered.items() if k.endswith("NOTES.txt")), "")
    c.expect(notes.strip() != "", where, "NOTES.txt renders empty")

    # Schemas.
    seen = set()
    for template, d in docs:
        dw = f"{where} {template} {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
        if not c.expect(all(k in d for k in ("apiVersion", "kind", "metadata")) and d["metadata"].get("name"), dw,
                        "apiVersion, kind and metadata.name are required"):
            continue
        key = (d["kind"], d["metadata"]["name"])
        c.expect(key not in seen, dw, "rendered twice")
        seen.add(key)
        c.expect(d["metadata"].get("labels", {}).get("app.kubernetes.io/instance") == RELEASE, dw, "missing the instance label")
        if d["kind"] in CRD_KINDS:
            c.expect(d["apiVersion"] == CRD_KINDS[d["kind"]], dw, f"apiVersion {d['apiVersion']}, want {CRD_KINDS[d['kind']]}")
            if d["kind"] == "ServiceMonitor":
                check_servicemonitor(c, dw, d, docs)
            else:
                check_scaledobject(c, dw, d, docs, allowed_metrics)
            continue
        try:
            kubernetes_validate.validate(d, KUBE_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            c.fail(dw, f"no Kubernetes {KUBE_VERSION} schema for {d['apiVersion']} {d['kind']} (a CRD must be listed in CRD_KINDS)")
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path) if hasattr(e, "path") else ""
            c.fail(dw, f"schema: {e.message} at {path}")

    # The chart has no subcharts: every manifest comes from its own templates.
    for t, d in docs:
        c.expect(t.startswith(f"{CHART.name}/templates/"), where,
                 f"{t} ({d.get('kind')}) is not one of the chart's own templates (a subchart?)")

    # Components.
    co = check_component(c, where, docs, "coordinator", "http", int(v["coordinator"]["port"]), "WEFT_HTTP_ADDR", "WEFT_SHUTDOWN_GRACE_MS")
    wk = check_component(c, where, docs, "worker", "metrics", int(v["worker"]["metricsPort"]), "WEFT_METRICS_ADDR", "WEFT_DRAIN_GRACE_MS")
    if name == "defaults":
        c.expect(co.get("port") == 8080, where, f"default coordinator http port is {co.get('port')}, want 8080")
        c.expect(wk.get("port") == 9091, where, f"default worker metrics port is {wk.get('port')}, want 9091")

    if co and wk:
        # Coordinator: one replica, the store on its volume.
        c.expect(co["deployment"]["spec"].get("replicas") == 1, where, "the coordinator must run exactly 1 replica")
        c.expect(co["deployment"]["spec"]["strategy"]["type"] == "Recreate", where, "the coordinator must use the Recreate strategy")
        mount = v["coordinator"]["persistence"]["mountPath"].rstrip("/")
        c.expect(str(co["env"].get("WEFT_DATABASE_URL", "")).startswith(f"sqlite://{mount}/"), where,
                 f"WEFT_DATABASE_URL {co['env'].get('WEFT_DATABASE_URL')!r} is not on the volume at {mount}")
        data = next((vol for vol in co["pod"]["volumes"] if vol["name"] == "data"), {})
        if v["coordinator"]["persistence"]["enabled"]:
            claim = (data.get("persistentVolumeClaim") or {}).get("claimName")
            pvcs = [p["metadata"]["name"] for p in find(docs, "PersistentVolumeClaim")]
            want = v["coordinator"]["persistence"]["existingClaim"]
            c.expect(claim == want if want else claim in pvcs, where, f"the data volume's claim {claim!r} is neither rendered nor the existing claim")
        # Coordinator and workers must agree on NATS.
        for var in ("WEFT_NATS_URL", "WEFT_SUBJECT_PREFIX"):
            c.expect(co["env"].get(var) == wk["env"].get(var), where, f"{var} differs between coordinator and worker")
        url = co["env"].get("WEFT_NATS_URL")
        want_url = v["nats"]["url"]
        c.expect(url == want_url, where, f"WEFT_NATS_URL {url!r}, want nats.url {want_url!r}")
        if name == "defaults":
            c.expect(url == DEFAULT_NATS_URL, where, f"default WEFT_NATS_URL {url!r}, want {DEFAULT_NATS_URL!r}")
        # The admin token and the encryption key come from a Secret, never a
        # plain value, and never show up outside it.
        check_secret_settings(c, where, v, docs, co["env"])
        check_secrets_stay_secret(c, where, v, docs, notes)
        # The first admin and the API rate limits, as set in values.
        for var, key in (("WEFT_ADMIN_NAME", "adminName"), ("WEFT_API_KEY_RATE_LIMIT_PER_S", "apiKeyRateLimitPerS"),
                         ("WEFT_API_KEY_RATE_LIMIT_BURST", "apiKeyRateLimitBurst")):
            want = str(v["coordinator"]["config"][key]).strip()
            c.expect(co["env"].get(var) == want, where, f"{var} {co['env'].get(var)!r}, want coordinator.config.{key} {want!r}")

        # Autoscaling: HPA xor KEDA; replicas left to whichever is on.
        hpa_on, keda_on = v["autoscaling"]["hpa"]["enabled"], v["autoscaling"]["keda"]["enabled"]
        hpas, sos = find(docs, "HorizontalPodAutoscaler"), find(docs, "ScaledObject")
        c.expect(len(hpas) == (1 if hpa_on else 0), where, f"{len(hpas)} HPAs rendered with autoscaling.hpa.enabled={hpa_on}")
        c.expect(len(sos) == (1 if keda_on else 0), where, f"{len(sos)} ScaledObjects rendered with autoscaling.keda.enabled={keda_on}")
        replicas = wk["deployment"]["spec"].get("replicas")
        if hpa_on or keda_on:
            c.expect(replicas is None, where, "the worker Deployment must leave replicas to the autoscaler")
        else:
            c.expect(replicas == v["worker"]["replicaCount"], where, f"worker replicas {replicas}, want {v['worker']['replicaCount']}")
        for h in hpas:
            c.expect(h["spec"]["scaleTargetRef"]["name"] == wk["deployment"]["metadata"]["name"], where, "the HPA does not target the workers")
            c.expect(any(m.get("resource", {}).get("name") == "cpu" for m in h["spec"].get("metrics", [])), where, "the HPA does not scale on CPU")
        for so in sos:
            c.expect(so["spec"]["minReplicaCount"] == v["autoscaling"]["keda"]["minReplicaCount"], where, "ScaledObject minReplicaCount differs from values")

        pdbs = find(docs, "PodDisruptionBudget")
        c.expect(len(pdbs) == (1 if v["worker"]["podDisruptionBudget"]["enabled"] else 0), where, "PodDisruptionBudget present iff enabled")
        for p in pdbs:
            c.expect(labels_match(p["spec"]["selector"]["matchLabels"], wk["labels"]), where, "the PodDisruptionBudget does not select the workers")

    # Monitoring.
    sms = find(docs, "ServiceMonitor")
    c.expect(len(sms) == (2 if v["serviceMonitor"]["enabled"] else 0), where,
             f"{len(sms)} ServiceMonitors rendered with serviceMonitor.enabled={v['serviceMonitor']['enabled']}, want 2 or 0")
    scraped = {}
    for sm in sms:
        comp = sm["metadata"]["labels"].get("app.kubernetes.io/component")
        for k, val in v["serviceMonitor"]["labels"].items():
            c.expect(sm["metadata"]["labels"].get(k) == val, where, f"ServiceMonitor lacks label {k}={val}")
        scraped[comp] = [ep["path"] for ep in sm["spec"]["endpoints"]]
    dash_cms = [d for d in find(docs, "ConfigMap") if "weft.json" in d.get("data", {})]
    c.expect(len(dash_cms) == (1 if v["dashboard"]["enabled"] else 0), where,
             f"{len(dash_cms)} dashboard ConfigMaps rendered with dashboard.enabled={v['dashboard']['enabled']}")
    for cm in dash_cms:
        label, value = v["dashboard"]["sidecarLabel"], v["dashboard"]["sidecarLabelValue"]
        c.expect(cm["metadata"]["labels"].get(label) == value, where, f"dashboard ConfigMap lacks label {label}: {value!r}")
        c.expect(cm["data"]["weft.json"].strip() == dashboard_text.strip(), where, "dashboard ConfigMap differs from dashboards/weft.json")
        try:
            json.loads(cm["data"]["weft.json"])
        except json.JSONDecodeError as e:
            c.fail(where, f"dashboard in the ConfigMap is not JSON: {e}")

    facts = {}
    for comp, info in (("coordinator", co), ("worker", wk)):
        if info:
            facts[comp] = {"port": info["port"], "paths": [info["paths"]["livenessProbe"], info["paths"]["readinessProbe"]],
                           "scraped": scraped.get(comp, []), "env": info["env"]}
    return docs, facts


def check_secret_settings(c: Checks, where: str, v: dict, docs, env: dict) -> None:
    """Each secret setting is a secretKeyRef to the right Secret and key; the
    chart's Secret exists iff a value is given in values, and holds exactly
    those values (base64 of what was given)."""
    secrets = {s["metadata"]["name"]: s for s in find(docs, "Secret")}
    c.expect(len(secrets) <= 1, where, f"at most one Secret (the chart's) may be rendered, found {sorted(secrets)}")
    want_keys: set[str] = set()
    for var, value_key, secret_key, chart_key, required in SECRET_SETTINGS:
        got = env.get(var)
        ref = got.get("secretKeyRef") if isinstance(got, dict) else None
        given = v.get(value_key) or ""
        existing = (v.get(secret_key) or {}).get("name") or ""
        if existing:
            c.expect(ref == {"name": existing, "key": v[secret_key]["key"]}, where,
                     f"{var} must come from the existing Secret {existing} (key {v[secret_key]['key']}), got {got!r}")
        elif given:
            want_keys.add(chart_key)
            if c.expect(ref is not None and ref.get("name") in secrets and ref.get("key") == chart_key, where,
                        f"{var} {got!r} does not point at key {chart_key} of the Secret made from {value_key}"):
                data = secrets[ref["name"]].get("data") or {}
                try:
                    stored = base64.b64decode(data.get(chart_key, ""), validate=True).decode()
                except ValueError as e:
                    stored = f"<not base64: {e}>"
                c.expect(stored == str(given), where, f"the Secret's {chart_key} is not {value_key}")
        else:
            c.expect(not required, where, f"{var} is required, yet neither {value_key} nor {secret_key}.name is set and the chart rendered")
            c.expect(got is None, where, f"neither {value_key} nor {secret_key}.name is set, yet {var} is rendered: {got!r}")
    held = {k for s in secrets.values() for part in ("data", "stringData") for k in (s.get(part) or {})}
    c.expect(held == want_keys, where,
             f"the chart's Secret holds {sorted(held)}, want exactly the values given in values {sorted(want_keys)}")


def strings_in(obj) -> list[str]:
    """Every string (keys and values) anywhere in a manifest."""
    if isinstance(obj, dict):
        return [x for k, val in obj.items() for x in strings_in(k) + strings_in(val)]
    if isinstance(obj, list):
        return [x for item in obj for x in strings_in(item)]
    return [obj] if isinstance(obj, str) else []


def check_secrets_stay_secret(c: Checks, where: str, v: dict, docs, notes: str) -> None:
    """The admin token and the encryption key are never in a ConfigMap: no
    ConfigMap has their variable, no container gets them as a plain value, and
    their values (plain or base64) appear in no manifest but the Secret, and
    not in NOTES.txt."""
    for var, value_key, _, _, _ in SECRET_SETTINGS:
        for cm in find(docs, "ConfigMap"):
            c.expect(var not in (cm.get("data") or {}), where, f"ConfigMap {cm['metadata']['name']} sets {var}")
        for dep in find(docs, "Deployment"):
            for ct in dep["spec"]["template"]["spec"]["containers"]:
                for e in ct.get("env", []):
                    if e["name"] == var:
                        c.expect("value" not in e and "secretKeyRef" in (e.get("valueFrom") or {}), where,
                                 f"{dep['metadata']['name']} gets {var} other than from a Secret: {e}")
        given = str(v.get(value_key) or "")
        if not given:
            continue
        forms = {"plain": given, "base64": base64.b64encode(given.encode()).decode()}
        for _, d in docs:
            for form, text in forms.items():
                found = any(text in x for x in strings_in(d))
                if d["kind"] == "Secret" and form == "base64":
                    continue
                c.expect(not found, where, f"{d['kind']} {d['metadata']['name']} holds {value_key} ({form}); only the Secret may")
        for form, text in forms.items():
            c.expect(text not in notes, where, f"NOTES.txt prints {value_key} ({form})")


def check_env_names(c: Checks, where: str, component: str, env: dict, config: dict) -> None:
    known = {"WEFT_" + k.upper() for k in config}
    for var in sorted(env):
        if var.startswith("WEFT_"):
            c.expect(var in known or var in ALLOWED_EXTRA_ENV[component], where,
                     f"{component} gets {var}, which is not WEFT_ + a {component} config field ({', '.join(sorted(config))})")


def check_values_documented(c: Checks) -> int:
    """Every key in values.yaml has a comment on the line right above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    keys = 0
    for i, line in enumerate(lines):
        if re.match(r"^\s*[A-Za-z_][\w.-]*:", line):
            keys += 1
            if i == 0 or not lines[i - 1].strip().startswith("#"):
                c.fail(f"values.yaml:{i + 1}", f"key `{line.strip()}` has no comment on the line above")
    return keys


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--coordinator-bin", help="weft-coordinator binary: check env names and ports against its --print-config")
    ap.add_argument("--worker-bin", help="weft-worker binary: the same for the worker")
    ap.add_argument("--facts-json", action="store_true", help="print ports and HTTP paths from the rendered defaults as JSON, and exit")
    args = ap.parse_args()

    c = Checks()
    try:
        with helm.Chart.load(str(CHART)) as chart:
            metadata = chart.metadata
    except helm.HelmError as e:
        print(f"chart: cannot load {CHART}: {e}", file=sys.stderr)
        return 1
    allowed_metrics = allowed_metric_names()
    dashboard_text = (CHART / "dashboards" / "weft.json").read_text()

    if args.facts_json:
        _, facts = check_value_set(c, "defaults", load_values("defaults"), allowed_metrics, dashboard_text)
        # /metrics is named only by the ServiceMonitors (off by default).
        _, sm_facts = check_value_set(c, "servicemonitor", load_values("servicemonitor"), allowed_metrics, dashboard_text)
        if c.failures or set(facts) != {"coordinator", "worker"}:
            print("check_chart: cannot take facts from the chart:\n  " + "\n  ".join(c.failures), file=sys.stderr)
            return 1
        out = {comp: {"port": facts[comp]["port"],
                      "paths": facts[comp]["paths"] + [p for p in sm_facts[comp]["scraped"] if p not in facts[comp]["paths"]]}
               for comp in ("coordinator", "worker")}
        print(json.dumps(out))
        return 0

    # 1. Lint, strict, for every value set: any warning or error fails. The
    # chart must depend on nothing these checks cannot see.
    c.expect(not metadata.get("dependencies"), "Chart.yaml",
             f"dependencies are not allowed (NATS is installed separately): {metadata.get('dependencies')}")
    c.expect(not (CHART / "charts").exists(), "charts/", "the chart must not vendor subcharts")
    info = 0
    for name in VALUE_SETS:
        report = helm.lint(str(CHART), load_values(name), strict=True, kube_version=f"v{KUBE_VERSION}.0", namespace=NAMESPACE)
        for m in report["messages"]:
            if m["severity"] <= 1:
                info += 1
            else:
                c.fail(f"[{name}] lint", f"{m['path']}: {m['error']}")
        for e in report["errors"]:
            if not any(e == m["error"] for m in report["messages"]):
                c.fail(f"[{name}] lint", e)

    # 2-4. Render, validate, check facts.
    manifests = 0
    facts_by_set = {}
    for name in VALUE_SETS:
        try:
            docs, facts = check_value_set(c, name, load_values(name), allowed_metrics, dashboard_text)
        except (KeyError, TypeError, AttributeError, ValueError) as e:  # a manifest missing what a check reads
            c.fail(f"[{name}]", f"a rendered manifest lacks an expected field ({type(e).__name__}: {e})")
            docs, facts = [], {}
        manifests += len(docs)
        facts_by_set[name] = facts
    for name, want in MUST_FAIL.items():
        try:
            render(load_values(name))
            c.fail(f"[{name}]", "rendered, but must fail")
        except helm.HelmError as e:
            c.expect(want in str(e), f"[{name}]", f"failed without the expected message {want!r}: {e}")

    documented = check_values_documented(c)

    # The dashboard file itself.
    exprs = check_dashboard(c, dashboard_text, allowed_metrics)

    # Paths the chart uses are routes the binaries serve (source).
    for comp, src in ROUTE_SOURCES.items():
        text = src.read_text()
        paths = set()
        for f in facts_by_set.values():
            if comp in f:
                paths |= set(f[comp]["paths"]) | set(f[comp]["scraped"])
        for p in sorted(paths):
            # `.route("/p", …)`, or a line `"/p" => { … }` of the coordinator's route table.
            routed = re.search(r'\.route\(\s*"' + re.escape(p) + '"', text) or \
                re.search(r'^\s*"' + re.escape(p) + r'"\s*=>\s*\{', text, re.M)
            c.expect(routed is not None,
                     str(src.relative_to(REPO)), f"the chart uses {p}, which the {comp} does not route")

    # WEFT_* names and default ports against the real configuration.
    bins = {"coordinator": args.coordinator_bin, "worker": args.worker_bin}
    addr_field = {"coordinator": "http_addr", "worker": "metrics_addr"}
    for comp in ("coordinator", "worker"):
        try:
            if bins[comp]:
                config = config_from_binary(comp, bins[comp])
                source = f"{bins[comp]} --print-config"
            else:
                config = config_from_source(comp)
                source = str(CONFIG_SOURCES[comp][0].relative_to(REPO))
        except ValueError as e:
            c.fail(comp, str(e))
            continue
        c.notes.append(f"{comp} WEFT_* names and default port checked against {source}")
        if addr_field[comp] not in config:
            c.fail(comp, f"{source} has no {addr_field[comp]}")
            continue
        default_port = port_of(str(config[addr_field[comp]]))
        chart_port = (facts_by_set.get("defaults") or {}).get(comp, {}).get("port")
        c.expect(default_port == chart_port, comp,
                 f"the binary's default {addr_field[comp]} is {config[addr_field[comp]]!r} but the chart's default container port is {chart_port}")
        for name, facts in facts_by_set.items():
            if comp in facts:
                check_env_names(c, f"[{name}]", comp, facts[comp]["env"], config)

    if c.failures:
        print(f"chart: {len(c.failures)} check(s) FAILED:", file=sys.stderr)
        for f in c.failures:
            print(f"  - {f}", file=sys.stderr)
        return 1
    for n in c.notes:
        print(f"note: {n}")
    print(f"chart: {len(VALUE_SETS)} value sets rendered (+{len(MUST_FAIL)} refused as they must be), "
          f"{manifests} manifests validated (Kubernetes {KUBE_VERSION}), {exprs} dashboard queries parsed, "
          f"{documented} values keys documented, all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
