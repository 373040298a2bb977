"""The rules of deploy/k8s that no schema or linter knows; run by deploy/check.sh.

Usage: python3 deploy/check.py deploy/k8s
Prints "ok   k8s: <rule>" or "FAIL k8s: <rule>: <why it matters>"; exits 1 if any failed.
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


def rules(objects):
    """(rule, holds, why) for each rule."""
    deployment = objects["Deployment"][0][1]
    pod = deployment["spec"]["template"]["spec"]
    inits, containers = pod.get("initContainers", []), pod["containers"]
    app = next(c for c in containers if c["name"] == "gatehouse")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    secret_volumes = {n for n, v in volumes.items() if v.get("secret", {}).get("secretName") == "gatehouse-keys"}
    keys_dir = objects["ConfigMap"][0][1]["data"].get("GATEHOUSE_KEYS_DIR")
    keys_mount = next((m for m in app.get("volumeMounts", []) if m["mountPath"] == keys_dir), {})
    pod_sc = pod.get("securityContext", {})
    examples = objects.get("Secret", [])
    resources = objects["Kustomization"][0][1].get("resources", [])
    manifests = {f for kind, objs in objects.items() if kind not in ("Kustomization", "Secret") for f, _ in objs}

    def mounts(c):
        return {m["name"] for m in c.get("volumeMounts", [])}

    def root_override(c):
        sc = c.get("securityContext", {})
        return sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False

    def locked_down(c):
        sc = c.get("securityContext", {})
        return (sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                and sc.get("capabilities", {}).get("drop") == ["ALL"] and not sc.get("capabilities", {}).get("add"))

    def probe(name):
        return app.get(name, {}).get("httpGet", {}).get("path")

    return [
        ("one replica, strategy Recreate",
         deployment["spec"].get("replicas") == 1 and deployment["spec"].get("strategy", {}).get("type") == "Recreate",
         "SQLite has one writer: a second pod, even during a rollout, would write the same database"),
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
        ("keys come from Secret gatehouse-keys, mounted only into an init container",
         len(secret_volumes) == 1 and not mounts(app) & secret_volumes
         and any(mounts(c) & secret_volumes for c in inits),
         "fsGroup makes Secret files group-readable and gatehouse refuses such keys, so an init container "
         "copies them with mode 0600"),
        ("GATEHOUSE_KEYS_DIR is a read-only mount of an in-memory volume",
         keys_mount.get("readOnly") is True
         and volumes.get(keys_mount.get("name"), {}).get("emptyDir", {}).get("medium") == "Memory",
         "the copied keys must never reach a node's disk, nor be writable by the server"),
        ("the example Secret holds placeholders, is not named gatehouse-keys, and kustomize leaves it out",
         all(d["metadata"]["name"] != "gatehouse-keys"
             and all("PLACEHOLDER" in str(v) for v in d.get("stringData", {}).values())
             and not d.get("data") and f not in resources for f, d in examples)
         and set(resources) == manifests,
         "`kubectl apply` on deploy/k8s must neither overwrite the real keys nor ship a key"),
    ]


def main(k8s_dir):
    try:
        checked = rules(load(k8s_dir))
    except (KeyError, IndexError, StopIteration, TypeError, AttributeError) as exc:
        print(f"FAIL k8s: the manifests lack something the rules read ({type(exc).__name__}: {exc})")
        return 1
    failed = 0
    for rule, holds, why in checked:
        if holds:
            print(f"ok   k8s: {rule}")
        else:
            print(f"FAIL k8s: {rule}: {why}")
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
