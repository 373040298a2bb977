"""Static checks of deploy/k8s and deploy/docker, run by deploy/check.sh.

Usage: python3 deploy/check.py REPO_ROOT {k8s|docker}

Prints one line per check: "ok   <what>" or "FAIL <what>: <why>".
Exits 0 when every check passed, 1 otherwise. Needs PyYAML.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shlex
import subprocess
import sys

import yaml

FAILED = 0


def ok(what: str) -> None:
    print(f"ok   {what}", flush=True)


def fail(what: str, why: str) -> None:
    global FAILED
    FAILED += 1
    print(f"FAIL {what}: {why}", flush=True)


def check(what: str, cond: bool, why: str = "") -> bool:
    if cond:
        ok(what)
    else:
        fail(what, why or "condition not met")
    return cond


def dig(obj, *path, default=None):
    """obj[path[0]][path[1]]..., or default when a step is missing."""
    for key in path:
        if isinstance(obj, dict) and key in obj:
            obj = obj[key]
        elif isinstance(obj, list) and isinstance(key, int) and -len(obj) <= key < len(obj):
            obj = obj[key]
        else:
            return default
    return obj


# --------------------------------------------------------------------------
# Kubernetes manifests


def load_manifests(k8s_dir: str) -> list[tuple[str, dict]] | None:
    files = sorted(glob.glob(os.path.join(k8s_dir, "*.yaml")) + glob.glob(os.path.join(k8s_dir, "*.yml")))
    if not files:
        fail("k8s: manifests present", f"no *.yaml under {k8s_dir}")
        return None
    docs: list[tuple[str, dict]] = []
    bad = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                for doc in yaml.safe_load_all(fh):
                    if doc is None:
                        continue
                    if not isinstance(doc, dict):
                        bad.append(f"{os.path.basename(path)}: a document is not a mapping")
                        continue
                    docs.append((os.path.basename(path), doc))
        except yaml.YAMLError as exc:
            bad.append(f"{os.path.basename(path)}: {exc}".replace("\n", " "))
    if not check(f"k8s: {len(files)} YAML files parse with PyYAML ({len(docs)} documents)", not bad, "; ".join(bad)):
        return None
    return docs


def check_k8s(root: str) -> None:
    k8s_dir = os.path.join(root, "deploy", "k8s")
    docs = load_manifests(k8s_dir)
    if docs is None:
        return

    # Every document is a namespace-less object with a kind and a name.
    problems = []
    for fname, doc in docs:
        if not doc.get("apiVersion") or not doc.get("kind"):
            problems.append(f"{fname}: apiVersion/kind missing")
        if doc.get("kind") == "Kustomization":
            if "namespace" in doc:
                problems.append(f"{fname}: sets a namespace")
            continue
        if not dig(doc, "metadata", "name"):
            problems.append(f"{fname}: metadata.name missing")
        if dig(doc, "metadata", "namespace") is not None:
            problems.append(f"{fname}: metadata.namespace set (manifests must be namespace-less)")
    check("k8s: every object has apiVersion, kind, name and no namespace", not problems, "; ".join(problems))

    by_kind: dict[str, list[tuple[str, dict]]] = {}
    for fname, doc in docs:
        by_kind.setdefault(doc.get("kind"), []).append((fname, doc))
    wanted = ["Deployment", "Service", "ConfigMap", "PersistentVolumeClaim", "Secret", "Kustomization"]
    missing = [k for k in wanted if k not in by_kind]
    check(f"k8s: kinds present ({', '.join(wanted)})", not missing, f"missing {missing}")
    extra = [k for k in by_kind if k not in wanted]
    check("k8s: no unexpected kinds", not extra, f"unexpected {extra}")
    if missing:
        return
    for kind in ("Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"):
        check(f"k8s: exactly one {kind}", len(by_kind[kind]) == 1, f"found {len(by_kind[kind])}")

    dep = by_kind["Deployment"][0][1]
    svc = by_kind["Service"][0][1]
    cm = by_kind["ConfigMap"][0][1]
    pvc = by_kind["PersistentVolumeClaim"][0][1]
    pod = dig(dep, "spec", "template", "spec", default={})
    containers = pod.get("containers") or []
    inits = pod.get("initContainers") or []
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    cm_data = cm.get("data") or {}

    # SQLite: one writer, so one pod, never two at once.
    check("k8s: Deployment replicas is 1 (SQLite has one writer)", dig(dep, "spec", "replicas") == 1,
          f"replicas = {dig(dep, 'spec', 'replicas')!r}")
    check("k8s: Deployment strategy is Recreate (no two pods during a rollout)",
          dig(dep, "spec", "strategy", "type") == "Recreate", f"strategy = {dig(dep, 'spec', 'strategy')!r}")
    check("k8s: PVC access mode is ReadWriteOnce or ReadWriteOncePod",
          set(dig(pvc, "spec", "accessModes", default=[])) <= {"ReadWriteOnce", "ReadWriteOncePod"}
          and bool(dig(pvc, "spec", "accessModes")), f"accessModes = {dig(pvc, 'spec', 'accessModes')!r}")

    # Pod security.
    psc = pod.get("securityContext") or {}
    check("k8s: pod runs as non-root uid/gid 10001 with fsGroup 10001",
          psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001
          and psc.get("runAsGroup") == 10001 and psc.get("fsGroup") == 10001, f"securityContext = {psc!r}")
    check("k8s: pod seccompProfile is RuntimeDefault", dig(psc, "seccompProfile", "type") == "RuntimeDefault",
          f"seccompProfile = {psc.get('seccompProfile')!r}")
    check("k8s: service account token not mounted", pod.get("automountServiceAccountToken") is False)
    check("k8s: enableServiceLinks is false (no injected GATEHOUSE_PORT/GATEHOUSE_SERVICE_* variables)",
          pod.get("enableServiceLinks") is False)

    problems = []
    for c in inits + containers:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if dig(sc, "capabilities", "drop") != ["ALL"] or dig(sc, "capabilities", "add"):
            problems.append(f"{name}: capabilities must drop ALL and add none")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
            problems.append(f"{name}: runs as root")
        if not dig(c, "resources", "requests") or not dig(c, "resources", "limits", "memory"):
            problems.append(f"{name}: resources.requests and limits.memory")
        for m in c.get("volumeMounts") or []:
            if m.get("name") not in volumes:
                problems.append(f"{name}: mounts undefined volume {m.get('name')!r}")
    check(f"k8s: all {len(inits + containers)} containers: read-only root, no escalation, drop ALL, resources, "
          "mounts defined", not problems, "; ".join(problems))

    main = next((c for c in containers if c.get("name") == "gatehouse"), None)
    if not check("k8s: container 'gatehouse' exists and is the only app container",
                 main is not None and len(containers) == 1, f"containers = {[c.get('name') for c in containers]}"):
        return
    check("k8s: readinessProbe is GET /readyz", dig(main, "readinessProbe", "httpGet", "path") == "/readyz",
          f"readinessProbe = {main.get('readinessProbe')!r}")
    check("k8s: livenessProbe is GET /healthz", dig(main, "livenessProbe", "httpGet", "path") == "/healthz",
          f"livenessProbe = {main.get('livenessProbe')!r}")
    ports = main.get("ports") or []
    port_names = {p.get("name"): p.get("containerPort") for p in ports}
    probe_ports = [dig(main, p, "httpGet", "port") for p in ("readinessProbe", "livenessProbe", "startupProbe")
                   if main.get(p)]
    check("k8s: probes target a declared container port",
          all(pp in port_names or pp in port_names.values() for pp in probe_ports), f"probe ports {probe_ports}")
    check("k8s: serve is the main container's command",
          main.get("args") == ["serve"] and not main.get("command"), f"args = {main.get('args')!r}")

    # Configuration from the ConfigMap.
    cm_name = dig(cm, "metadata", "name")
    refs = [dig(e, "configMapRef", "name") for e in main.get("envFrom") or []]
    check("k8s: gatehouse takes its env from the ConfigMap", cm_name in refs, f"envFrom {refs} vs {cm_name!r}")
    check("k8s: ConfigMap binds 0.0.0.0:8080 and the container port is 8080",
          cm_data.get("GATEHOUSE_BIND") == "0.0.0.0:8080" and 8080 in port_names.values(),
          f"GATEHOUSE_BIND = {cm_data.get('GATEHOUSE_BIND')!r}, ports {port_names}")
    for key in ("GATEHOUSE_DATABASE", "GATEHOUSE_KEYS_DIR", "GATEHOUSE_ISSUER", "GATEHOUSE_AUDIENCE"):
        check(f"k8s: ConfigMap sets {key}", isinstance(cm_data.get(key), str) and cm_data.get(key) != "",
              "missing or not a string")
    non_str = [k for k, v in cm_data.items() if not isinstance(v, str)]
    check("k8s: every ConfigMap value is a string", not non_str, f"non-string values: {non_str}")

    # Data volume: the PVC, mounted where GATEHOUSE_DATABASE points.
    mounts = {m.get("name"): m for m in main.get("volumeMounts") or []}
    data_vol = next((n for n, v in volumes.items()
                     if dig(v, "persistentVolumeClaim", "claimName") == dig(pvc, "metadata", "name")), None)
    db = cm_data.get("GATEHOUSE_DATABASE", "")
    check("k8s: the PVC is mounted read-write where GATEHOUSE_DATABASE lives",
          data_vol in mounts and not mounts[data_vol].get("readOnly")
          and db.startswith(mounts[data_vol].get("mountPath", "//").rstrip("/") + "/"),
          f"volume {data_vol!r}, mounts {mounts.get(data_vol)!r}, database {db!r}")

    # Keys: Secret gatehouse-keys, defaultMode 0400, never mounted directly into
    # gatehouse (fsGroup would add a group-read bit); copied 0600 into /keys.
    secret_vols = [n for n, v in volumes.items() if dig(v, "secret", "secretName") == "gatehouse-keys"]
    if check("k8s: a volume comes from Secret gatehouse-keys", len(secret_vols) == 1, f"found {secret_vols}"):
        sv = volumes[secret_vols[0]]
        check("k8s: Secret volume defaultMode is 0400", dig(sv, "secret", "defaultMode") == 0o400,
              f"defaultMode = {dig(sv, 'secret', 'defaultMode')!r}")
        users = [c.get("name") for c in containers if any(m.get("name") == secret_vols[0]
                                                          for m in c.get("volumeMounts") or [])]
        check("k8s: the Secret volume is not mounted into the app container (fsGroup adds group read)",
              not users, f"mounted into {users}")
        installers = [c for c in inits if any(m.get("name") == secret_vols[0] for m in c.get("volumeMounts") or [])]
        keys_dir = cm_data.get("GATEHOUSE_KEYS_DIR")
        keys_mount = next((m for m in main.get("volumeMounts") or [] if m.get("mountPath") == keys_dir), None)
        if check("k8s: GATEHOUSE_KEYS_DIR is a read-only mount of an in-memory emptyDir",
                 keys_mount is not None and keys_mount.get("readOnly") is True
                 and dig(volumes.get(keys_mount.get("name")), "emptyDir", "medium") == "Memory",
                 f"mount at {keys_dir!r}: {keys_mount!r}"):
            script = "\n".join(str(x) for c in installers for x in (c.get("command") or []) + (c.get("args") or []))
            writes = any(any(m.get("name") == keys_mount.get("name") and not m.get("readOnly")
                             for m in c.get("volumeMounts") or []) for c in installers)
            check("k8s: an init container copies the Secret into the keys volume with mode 0600",
                  len(installers) == 1 and writes and "0600" in script,
                  f"installers {[c.get('name') for c in installers]}")
            if installers and (installers[0].get("command") or [])[:2] == ["/bin/sh", "-c"]:
                res = subprocess.run(["sh", "-n", "-c", installers[0]["command"][2]], capture_output=True, text=True)
                check("k8s: install-keys shell script parses (sh -n)", res.returncode == 0, res.stderr.strip())
    check("k8s: a migrate init container runs `gatehouse migrate`",
          any(c.get("args") == ["migrate"] for c in inits), f"init containers {[c.get('name') for c in inits]}")

    # Service routes to the pod's http port.
    labels = dig(dep, "spec", "template", "metadata", "labels", default={})
    selector = dig(svc, "spec", "selector", default={})
    check("k8s: Service selector matches the pod labels",
          bool(selector) and all(labels.get(k) == v for k, v in selector.items()), f"{selector} vs {labels}")
    check("k8s: Deployment selector matches the pod labels",
          all(labels.get(k) == v for k, v in dig(dep, "spec", "selector", "matchLabels", default={"": None}).items()))
    targets = [p.get("targetPort") for p in dig(svc, "spec", "ports", default=[])]
    check("k8s: Service targetPort is a container port",
          bool(targets) and all(t in port_names or t in port_names.values() for t in targets), f"{targets}")
    check("k8s: Service is ClusterIP (TLS and public routing belong to an ingress)",
          dig(svc, "spec", "type", default="ClusterIP") == "ClusterIP")

    # The example Secret: placeholders only, and unable to clobber the real one.
    secrets = by_kind["Secret"]
    problems = []
    for fname, s in secrets:
        if fname != "secret.example.yaml":
            problems.append(f"{fname}: Secrets belong in the cluster, not in the repository")
        if dig(s, "metadata", "name") == "gatehouse-keys":
            problems.append(f"{fname}: named gatehouse-keys, so applying deploy/k8s/ would overwrite the real one")
        values = list((s.get("stringData") or {}).values()) + list((s.get("data") or {}).values())
        if not values or any("PLACEHOLDER" not in str(v) for v in values):
            problems.append(f"{fname}: every value must be a PLACEHOLDER (stringData)")
        files = list((s.get("stringData") or {}).keys()) + list((s.get("data") or {}).keys())
        if "refresh.secret" not in files or not any(f.endswith(".pem") for f in files):
            problems.append(f"{fname}: shows neither a *.pem nor refresh.secret")
        if "BEGIN RSA PRIVATE KEY" in str(values) or re.search(r"MII[A-Za-z0-9+/]{40}", str(values)):
            problems.append(f"{fname}: looks like it holds real key material")
    check("k8s: secret.example.yaml holds placeholders only, under a name that cannot clobber gatehouse-keys",
          not problems, "; ".join(problems))
    with open(os.path.join(k8s_dir, "secret.example.yaml"), encoding="utf-8") as fh:
        text = fh.read()
    check("k8s: secret.example.yaml shows the `kubectl create secret generic gatehouse-keys` command",
          "kubectl create secret generic gatehouse-keys" in text)

    # kustomization.yaml lists the real manifests and never the example Secret.
    kz_fname, kz = by_kind["Kustomization"][0]
    resources = kz.get("resources") or []
    missing_files = [r for r in resources if not os.path.exists(os.path.join(k8s_dir, r))]
    expected = {f for f, d in docs if d.get("kind") not in ("Kustomization", "Secret")}
    check("k8s: kustomization.yaml lists every manifest except the example Secret",
          not missing_files and set(resources) == expected and "secret.example.yaml" not in resources,
          f"resources {resources}, expected {sorted(expected)}, missing files {missing_files}")


# --------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(path: str) -> list[tuple[int, str, str]]:
    """(line number, INSTRUCTION, arguments) with continuations joined and comments dropped."""
    out = []
    buf, start = "", 0
    with open(path, encoding="utf-8") as fh:
        for no, raw in enumerate(fh, 1):
            line = raw.rstrip("\n")
            stripped = line.strip()
            if stripped.startswith("#"):
                continue  # comments, also inside a continuation (Docker drops those too)
            if not stripped and not buf:
                continue
            if not buf:
                start = no
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            buf += line
            word, _, rest = buf.strip().partition(" ")
            out.append((start, word.upper(), rest.strip()))
            buf = ""
    return out


def exec_form(args: str):
    try:
        val = json.loads(args)
    except json.JSONDecodeError:
        return None
    return val if isinstance(val, list) and all(isinstance(x, str) for x in val) else None


def check_docker(root: str) -> None:
    path = os.path.join(root, "deploy", "docker", "Dockerfile")
    if not check("docker: deploy/docker/Dockerfile exists", os.path.isfile(path)):
        return
    ins = dockerfile_instructions(path)

    # Resolve global ARG defaults used in FROM lines.
    args: dict[str, str] = {}
    stages: list[dict] = []
    for no, word, rest in ins:
        if word == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip().strip('"')
        elif word == "FROM":
            parts = rest.split()
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), parts[0])
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append({"image": image, "name": name, "ins": []})
        elif stages:
            stages[-1]["ins"].append((no, word, rest))
    if not check("docker: multi-stage build (builder + runtime)", len(stages) >= 2, f"{len(stages)} stage(s)"):
        return
    builder, runtime = stages[0], stages[-1]
    check("docker: builder is rust:1.95 slim (bookworm)",
          re.fullmatch(r"rust:1\.95(\.\d+)?-slim-bookworm", builder["image"]) is not None, builder["image"])
    check("docker: runtime is debian:bookworm-slim", runtime["image"] == "debian:bookworm-slim", runtime["image"])

    b_runs = " ".join(r for _, w, r in builder["ins"] if w == "RUN")
    check("docker: builder runs `cargo build --release --locked`", "cargo build --release --locked" in b_runs)
    check("docker: builder installs gcc and g++ (rusqlite, ring, aws-lc-sys build C)",
          {"gcc", "g++"} <= set(b_runs.split()))

    r_runs = [r for _, w, r in runtime["ins"] if w == "RUN"]
    installed = []
    for r in r_runs:
        for m in re.finditer(r"apt-get install ([^&;|]*)", r):
            installed += [t for t in shlex.split(m.group(1)) if not t.startswith("-")]
    check("docker: runtime installs ca-certificates only", installed == ["ca-certificates"], f"installs {installed}")

    # COPY sources must exist in the repository (the build context is the root).
    problems, seen = [], []
    context_copies = []
    for stage in stages:
        for no, word, rest in stage["ins"]:
            if word not in ("COPY", "ADD"):
                continue
            tokens = exec_form(rest) or shlex.split(rest)
            flags = [t for t in tokens if t.startswith("--")]
            paths = [t for t in tokens if not t.startswith("--")]
            if any(f.startswith("--from=") for f in flags):
                continue
            if word == "ADD":
                problems.append(f"line {no}: use COPY, not ADD")
            for src in paths[:-1]:
                seen.append(src)
                context_copies.append(src.rstrip("/"))
                norm = os.path.normpath(src)
                if norm in (".", "") or norm.startswith("..") or norm.split(os.sep)[0] == "keys":
                    problems.append(f"line {no}: copies {src!r}: never copy the whole context or keys/ "
                                    "(local keys would end up in the image)")
                    continue
                if not glob.glob(os.path.join(root, src)):
                    problems.append(f"line {no}: {src} does not exist in the repository")
    check(f"docker: COPY sources exist in the repository ({', '.join(seen)})", not problems, "; ".join(problems))
    needed = [p for p in ("Cargo.toml", "Cargo.lock", "src", "build.rs", "migrations")
              if os.path.exists(os.path.join(root, p)) or p in ("Cargo.toml", "Cargo.lock", "src")]
    check("docker: everything cargo needs is copied into the builder (Cargo.toml, Cargo.lock, src"
          + (", build.rs" if "build.rs" in needed else "") + (", migrations" if "migrations" in needed else "") + ")",
          all(p in context_copies for p in needed), f"copied {context_copies}, needed {needed}")

    # Runtime stage settings.
    def last(word: str, stage=runtime):
        vals = [r for _, w, r in stage["ins"] if w == word]
        return vals[-1] if vals else None

    user = last("USER") or ""
    check("docker: runtime runs as uid 10001 (non-root)", user.split(":")[0] == "10001", f"USER {user!r}")
    users_rc = " ".join(r_runs)
    check("docker: runtime creates user/group 10001",
          "--uid 10001" in users_rc and "--gid 10001" in users_rc)
    check("docker: runtime creates /data and /keys owned by 10001, mode 0700",
          re.search(r"install -d -o 10001 -g 10001 -m 0700 /data /keys", users_rc) is not None)
    env: dict[str, str] = {}
    for _, w, r in runtime["ins"]:
        if w == "ENV":
            for tok in shlex.split(r):
                k, _, v = tok.partition("=")
                env[k] = v
    want = {"GATEHOUSE_BIND": "0.0.0.0:8080", "GATEHOUSE_DATABASE": "/data/gatehouse.db",
            "GATEHOUSE_KEYS_DIR": "/keys"}
    check("docker: ENV " + " ".join(f"{k}={v}" for k, v in want.items()),
          all(env.get(k) == v for k, v in want.items()), f"ENV {env}")
    check("docker: EXPOSE 8080", any(w == "EXPOSE" and "8080" in r.split() for _, w, r in runtime["ins"]))
    vol = exec_form(last("VOLUME") or "") or (last("VOLUME") or "").split()
    check("docker: VOLUME /data (and not /keys)", "/data" in vol and "/keys" not in vol, f"VOLUME {vol}")
    check('docker: ENTRYPOINT ["/usr/local/bin/gatehouse"]',
          exec_form(last("ENTRYPOINT") or "") == ["/usr/local/bin/gatehouse"], f"ENTRYPOINT {last('ENTRYPOINT')}")
    check('docker: CMD ["serve"]', exec_form(last("CMD") or "") == ["serve"], f"CMD {last('CMD')}")
    copied_bin = any(w == "COPY" and "--from=builder" in r and r.split()[-1] == "/usr/local/bin/gatehouse"
                     for _, w, r in runtime["ins"])
    check("docker: runtime copies only the binary from the builder", copied_bin)


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[2] not in ("k8s", "docker"):
        print(__doc__, file=sys.stderr)
        return 2
    root = sys.argv[1]
    {"k8s": check_k8s, "docker": check_docker}[sys.argv[2]](root)
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
