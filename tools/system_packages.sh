#!/usr/bin/env bash
# The Debian packages that `make test` and `make lint` run for real: PostgreSQL 15 (the prediction log
# and MLflow's store in integration tests), Prometheus and Alertmanager (the native stack, promtool for
# the rules), nginx (the stack's load balancer config, run by tests/integration/test_load_balancer.py),
# Groovy (the Jenkinsfile syntax check), a Java runtime (`make score ENGINE=spark`, and the
# Spark test), Ceph's monitor, manager, OSD and RADOS Gateway (the native stack's S3 server, the same
# docker/s3/entrypoint.sh as the stack's image). As root, installs what is missing and says so;
# otherwise names what is missing and exits 1.
set -euo pipefail

need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || need+=(prometheus-alertmanager)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v groovy >/dev/null 2>&1 || need+=(groovy)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
command -v radosgw >/dev/null 2>&1 || [ -x /usr/bin/radosgw ] || need+=(ceph-mon ceph-mgr ceph-osd radosgw ceph-common)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$EUID" -ne 0 ]; then
  echo "the tests need Debian packages that are missing: ${need[*]}; install them as root:" \
       "apt-get install ${need[*]} (then run the same command again)" >&2
  exit 1
fi
echo "installing Debian packages the tests run: ${need[*]} (about a minute)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
echo "installed: ${need[*]}"
