#!/usr/bin/env bash
# Installs the system packages the test suite needs when they are missing: PostgreSQL (the read
# model's production database), Chromium (to look at the Temporal UI), Prometheus (the lab's
# metrics, queried by rollouts and scaling) and HAProxy (the load balancer of `lcp dev --split`),
# from Debian's packages.
# `system-deps.sh prometheus` installs only what it names (make dev needs Prometheus alone).
set -euo pipefail
wanted=("$@")
((${#wanted[@]})) || wanted=(postgresql chromium prometheus haproxy)
want() { [[ " ${wanted[*]} " == *" $1 "* ]]; }
missing=()
if want postgresql && ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  missing+=(postgresql)
fi
if want chromium && ! command -v chromium >/dev/null; then missing+=(chromium); fi
if want prometheus && ! command -v prometheus >/dev/null; then missing+=(prometheus); fi
if want haproxy && ! command -v haproxy >/dev/null && [[ ! -x /usr/sbin/haproxy ]]; then missing+=(haproxy); fi
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing ${missing[*]} from Debian's packages"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
