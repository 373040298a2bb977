"""The rules of the Kubernetes manifests that no schema or linter knows; run by
deploy/check.sh on deploy/k8s (one pod, SQLite) and deploy/k8s-replicas (several pods,
PostgreSQL and Redis).

Usage: python3 deploy/check.py deploy/k8s
Prints "ok   <dir>: <rule>" or "FAIL <dir>: <rule>: <why it matters>"; exits 1 if any failed.
"""

import glob
import os
import sys

import yaml


def load(k8s_dir):
    """{kind: [(file name, object)]} of every manifest."""
    objects = {}
    for path in sorted(glob.glob(os.path.join(k8s_dir, "*.yaml"))):
        with open(path, encoding="utf-8") as fh:
            for doc in yaml.safe_load_all(fh):
                if doc:
                    objects.setdefault(doc.get("kind"), []).append((os.path.basename(path), doc))
    return objects


def app_container(pod):
    return next(c for c in pod["containers"] if c["name"] == "gatehouse")


def mounts(c):
    return {m["name"] for m in c.get("volumeMounts", [])}


def common_rules(objects):
    """Rules every gatehouse Deployment keeps, whatever its storage."""
    deployment = objects["Deployment"][0][1]
    pod = deployment["spec"]["template"]["spec"]
    inits, containers = pod.get("initContainers", []), pod["containers"]
    app = app_container(pod)
    pod_sc = pod.get("securityContext", {})
    examples = objects.get("Secret", [])
    resources = objects["Kustomization"][0][1].get("resources", [])
    manifests = {f for kind, objs in objects.items() if kind not in ("Kustomization", "Secret") for f, _ in objs}

    def root_override(c):
        sc = c.get("securityContext", {})
        return sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False

    def locked_down(c):
        sc = c.get("securityContext", {})
        return (sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                and sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add"))

    def probe(name):
        return app.get(name, {}).get("httpGet", {}).get("path")

    # What reaches gatehouse from outside the cluster: a Service other than ClusterIP
    # publishes every path (the admin console /admin/, /metrics), and an Ingress may
    # route only the public ones, as deploy/nginx/gatehouse.conf does.
    public_paths = {"/v1", "/v1/", "/.well-known", "/.well-known/"}
    services = [d for _, d in objects.get("Service", [])]
    routed = [p.get("path", "/") for _, d in objects.get("Ingress", [])
              for r in d["spec"].get("rules", []) for p in r.get("http", {}).get("paths", [])]

    return [
        ("the pod runs as non-root uid 10001, and no container overrides it",
         pod_sc.get("runAsNonRoot") is True and pod_sc.get("runAsUser") == 10001
         and not any(root_override(c) for c in inits + containers),
         "the image's user owns /data and /keys; root in a container is one kernel bug from root on the node"),
        ("every container: no privilege escalation, read-only root, all capabilities dropped",
         all(locked_down(c) for c in inits + containers),
         "gatehouse needs no privilege, and a compromised process must not rewrite its own image"),
        ("liveness probes /healthz, readiness probes /readyz",
         probe("livenessProbe") == "/healthz" and probe("readinessProbe") == "/readyz",
         "/readyz fails while the database is unwritable: as liveness it would restart a pod that only "
         "needs to leave the rotation"),
        ("nothing public but /v1/ and /.well-known/: every Service is ClusterIP, every Ingress path public",
         bool(services) and all(d["spec"].get("type", "ClusterIP") == "ClusterIP"
                                and not d["spec"].get("externalIPs") for d in services)
         and all(p in public_paths for p in routed)
         and not any(d["spec"].get("defaultBackend") for _, d in objects.get("Ingress", [])),
         "a LoadBalancer or NodePort Service, or an Ingress routing `/`, publishes the admin console "
         "(/admin/) and /metrics to anyone; route the console only from an allowlisted network"),
        ("the example Secrets hold placeholders, are named *-example, and kustomize leaves them out",
         all(d["metadata"]["name"].endswith("-example")
             and all("PLACEHOLDER" in str(v) for v in d.get("stringData", {}).values())
             and not d.get("data") and f not in resources for f, d in examples)
         and set(resources) == manifests,
         "`kubectl apply` must neither overwrite the real Secrets nor ship a key or a password"),
    ]


def single_rules(objects):
    """deploy/k8s: one pod on SQLite, file keys from a Secret."""
    deployment = objects["Deployment"][0][1]
    pod = deployment["spec"]["template"]["spec"]
    app = app_container(pod)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret_volumes = {n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == "gatehouse-keys"}
    keys_dir = objects["ConfigMap"][0][1]["data"].get("GATEHOUSE_KEYS_DIR")
    keys_mount = next((m for m in app.get("volumeMounts", []) if m["mountPath"] == keys_dir), {})
    return [
        ("one replica, strategy Recreate",
         deployment["spec"].get("replicas") == 1 and deployment["spec"].get("strategy", {}).get("type") == "Recreate",
         "SQLite has one writer: a second pod, even during a rollout, would write the same database"),
        ("keys come from Secret gatehouse-keys, mounted only into an init container",
         len(secret_volumes) == 1 and not mounts(app) & secret_volumes
         and any(mounts(c) & secret_volumes for c in pod.get("initContainers", [])),
         "fsGroup makes Secret files group-readable and gatehouse refuses such keys, so an init container "
         "copies them with mode 0600"),
        ("GATEHOUSE_KEYS_DIR is a read-only mount of an in-memory volume",
         keys_mount.get("readOnly") is True
         and volumes.get(keys_mount.get("name"), {}).get("emptyDir", {}).get("medium") == "Memory",
         "the copied keys must never reach a node's disk, nor be writable by the server"),
    ]


def replica_rules(objects):
    """deploy/k8s-replicas: several pods on PostgreSQL and Redis, keys in the database."""
    deployment = objects["Deployment"][0][1]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    inits = pod.get("initContainers", [])
    app = app_container(pod)
    config = objects["ConfigMap"][0][1]["data"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    rolling = spec.get("strategy", {}).get("rollingUpdate", {})
    budgets = [d for _, d in objects.get("PodDisruptionBudget", [])]
    labels = spec["selector"]["matchLabels"]
    kek_secret = {n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == "gatehouse-kek"}
    kek_file = config.get("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "")
    kek_mount = next((m for m in app.get("volumeMounts", []) if kek_file.startswith(m["mountPath"] + "/")), {})

    def database_from_secret(c):
        env = {e["name"]: e for e in c.get("env", [])}
        ref = env.get("GATEHOUSE_DATABASE", {}).get("valueFrom", {}).get("secretKeyRef", {})
        return ref.get("name") == "gatehouse-database"

    pre_stop = app.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    return [
        ("at least two replicas, rolling with maxUnavailable 0",
         spec.get("replicas", 1) >= 2 and spec.get("strategy", {}).get("type") == "RollingUpdate"
         and rolling.get("maxUnavailable") == 0,
         "a rollout must start a ready pod before it stops one, or it drops capacity and requests"),
        ("a PodDisruptionBudget keeps all but one replica through a drain",
         any(b["spec"]["selector"]["matchLabels"] == labels and b["spec"].get("minAvailable") == spec["replicas"] - 1
             for b in budgets),
         "without it a node drain may evict every replica at once"),
        ("no writable volume but in-memory scratch: no PersistentVolumeClaim, no hostPath",
         not objects.get("PersistentVolumeClaim")
         and all("persistentVolumeClaim" not in v and "hostPath" not in v for v in volumes.values()),
         "replicas share PostgreSQL and Redis; state on a pod's volume would differ between replicas"),
        ("GATEHOUSE_DATABASE comes from Secret gatehouse-database in every container that reads it",
         "GATEHOUSE_DATABASE" not in config and database_from_secret(app)
         and all(database_from_secret(c) for c in inits if c.get("args") == ["migrate"]),
         "the URL holds the database password, which a ConfigMap would show to anyone who can read it"),
        ("rate limits are shared in Redis",
         config.get("GATEHOUSE_RATE_LIMIT_STORE", "").startswith(("redis://", "rediss://")),
         "in memory each replica would allow the configured rate by itself: N replicas, N times the limit"),
        ("the KEK comes from Secret gatehouse-kek via an init container, into a read-only in-memory mount",
         len(kek_secret) == 1 and not mounts(app) & kek_secret
         and any(mounts(c) & kek_secret for c in inits)
         and kek_mount.get("readOnly") is True
         and volumes.get(kek_mount.get("name"), {}).get("emptyDir", {}).get("medium") == "Memory",
         "gatehouse refuses a group-readable KEK, and the KEK must never reach a node's disk"),
        ("a preStop pause shorter than the grace period",
         len(pre_stop) >= 2 and pre_stop[-1].isdigit()
         and int(pre_stop[-1]) < pod.get("terminationGracePeriodSeconds", 30),
         "endpoints are removed after SIGTERM is sent: without a pause, new requests reach a stopping pod"),
    ]


def rules(objects):
    """(rule, holds, why) for each rule."""
    deployment = objects["Deployment"][0][1]
    replicated = deployment["spec"].get("replicas", 1) > 1
    return common_rules(objects) + (replica_rules(objects) if replicated else single_rules(objects))


def main(k8s_dir):
    name = os.path.basename(os.path.normpath(k8s_dir))
    try:
        checked = rules(load(k8s_dir))
    except (KeyError, IndexError, StopIteration, TypeError, AttributeError) as exc:
        print(f"FAIL {name}: the manifests lack something the rules read ({type(exc).__name__}: {exc})")
        return 1
    failed = 0
    for rule, holds, why in checked:
        if holds:
            print(f"ok   {name}: {rule}")
        else:
            print(f"FAIL {name}: {rule}: {why}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
