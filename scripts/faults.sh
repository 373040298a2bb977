#!/usr/bin/env bash
# Storage faults against the real binary (see RELIABILITY.md): a database locked by
# another process, a full disk (a 4 MiB tmpfs), a read-only file system (a tmpfs
# remounted read-only), and 160 requests at once stuck behind a lock. The tmpfs cases
# need root with CAP_SYS_ADMIN (mount); without it they fail (add `--skip needs_root`).
# The filter also runs pg_faults.rs: PostgreSQL restarted, its backends killed, a full
# pool, gatehouse started before its database, on a PostgreSQL server each test starts.
#
#   bash scripts/faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo test --test reliability faults:: -- --nocapture
