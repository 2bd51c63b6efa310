#!/usr/bin/env bash
# Checks the Bazel BUILD offline: every target must load (query //...) and every
# py_library must build. py_binary/py_test need @rules_cc, which cannot be
# fetched offline, so they are only queried. Leaves nothing behind: a
# throw-away output root under /tmp, no bazel-* symlinks, no server (--batch).
set -euo pipefail

cd "$(dirname "$0")/.."
root="$(mktemp -d "${TMPDIR:-/tmp}/tf_precrop_bazel.XXXXXX")"
# Bazel writes its install base and outputs read-only.
trap 'chmod -R u+w "$root" 2>/dev/null; rm -rf "$root"' EXIT

bazel_() { bazel --batch --output_user_root="$root" "$@"; }

echo "== bazel query //..."
bazel_ query //... 2>"$root/query.log" || { cat "$root/query.log" >&2; exit 1; }

libraries="$(bazel_ query 'kind(py_library, //...)' 2>>"$root/query.log")"
echo "== bazel build of $(wc -w <<<"$libraries") py_library targets"
# Word splitting of $libraries is intended: one label per word.
# shellcheck disable=SC2086
bazel_ build --symlink_prefix=/ $libraries
echo "check_bazel: OK"
