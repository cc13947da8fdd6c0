#!/bin/sh
# The programs the tests (or the benchmark) run besides Python, from Debian's packages, and the
# npm packages of the Node test clients. Run by `make test` (all of them) and `make bench`/
# `make soak` (those they name):
#
#     sh .ci/tools.sh [COMMAND ...]
#
# What is missing is installed when this runs as root with apt-get; otherwise it stops at once
# with one line naming what is missing and the command that installs it, so that no test errors
# (or skips) later for a missing tool.
set -eu

# COMMAND=PACKAGE: the command a test runs, and the Debian package that brings it.
ALL="chromium=chromium node=nodejs npm=npm wrk=wrk nginx=nginx redis-server=redis-server rabbitmq-server=rabbitmq-server curl=curl"
# Node clients whose npm packages (pinned by their package-lock.json) the tests need.
NPM_DIRS="tests/live/socketio/node"

package_of() {
  for pair in $ALL; do
    if [ "${pair%%=*}" = "$1" ]; then echo "${pair#*=}"; return; fi
  done
  echo "tools.sh: unknown command $1" >&2
  exit 2
}

wanted=${*:-$(for pair in $ALL; do printf '%s ' "${pair%%=*}"; done)}
missing=""
for command in $wanted; do
  command -v "$command" >/dev/null 2>&1 || missing="$missing $(package_of "$command")"
done

if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages the tests need:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086  # one word per package
    apt-get install -y -qq $missing >/dev/null
  else
    echo "missing:$missing (Debian packages); install them with: sudo apt-get install -y$missing" >&2
    exit 1
  fi
fi

# The npm packages, once node and npm are there (`npm ci`: exactly the lock file's versions).
if [ $# -eq 0 ]; then
  for dir in $NPM_DIRS; do
    [ -f "$dir/node_modules/.package-lock.json" ] || (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  done
fi
