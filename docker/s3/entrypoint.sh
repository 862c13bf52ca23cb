#!/bin/bash
# One-node Ceph with the RADOS Gateway as the stack's S3 (docker/s3.Dockerfile). First start: a cluster
# with a fresh fsid, one monitor (a), one manager (x), one BlueStore OSD (0) on a sparse file, the
# gateway (rgw.gw) and the S3 user whose keys come from S3_ACCESS_KEY / S3_SECRET_KEY. Every start: the
# daemons in the foreground under this script, the user's keys set from the environment (a rotated
# secret takes effect on restart), SIGTERM stops them gateway first, monitor last. Any daemon that exits
# ends the container, so Compose's restart policy brings the whole node back.
set -euo pipefail
log() { echo "s3: $*"; }
die() { echo "s3: $*" >&2; exit 1; }

: "${S3_ACCESS_KEY:=}" "${S3_SECRET_KEY:=}"
[ -n "$S3_ACCESS_KEY" ] || die "S3_ACCESS_KEY is empty: set it (and S3_SECRET_KEY) in the env file"
[ ${#S3_SECRET_KEY} -ge 16 ] || die "S3_SECRET_KEY must have at least 16 characters"
PORT="${S3_PORT:-9000}"
MON_PORT="${S3_MON_PORT:-3300}"
DATA="${S3_DATA_DIR:-/var/lib/ceph}"   # the image's volume; natively (make stack-native) a folder of STACK_DIR
CONF="$DATA/ceph.conf"                  # kept with the data: the fsid belongs to it
mkdir -p "$DATA" 2>/dev/null || true
[ -w "$DATA" ] || die "$DATA is not writable by uid $(id -u): mount a volume owned by the ceph user"

write_conf() {
  cat > "$CONF" <<CONF
[global]
fsid = $1
mon initial members = a
mon host = v2:127.0.0.1:$MON_PORT/0
ms bind msgr1 = false
public network = 127.0.0.0/8
auth allow insecure global id reclaim = false
run dir = $DATA/run
admin socket = $DATA/run/\$cluster-\$name.asok
log to file = false
log to stderr = true
err to stderr = true
mon cluster log to stderr = false
clog to monitors = true
debug ms = 0/0
debug mon = 0/0
debug mgr = 0/0
debug osd = 0/0
debug bluestore = 0/0
debug rocksdb = 0/0
debug paxos = 0/0
debug auth = 0/0
debug monc = 0/0
debug rgw = 0/0
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0
mon max pg per osd = 512

[mon]
keyring = $DATA/mon/ceph-a/keyring
mon data = $DATA/mon/ceph-a

[mgr]
# the manager logs a pgmap line every 2 s at level 0; only its errors go to the container log
log to stderr = false
err to stderr = true
keyring = $DATA/mgr/ceph-x/keyring
mgr data = $DATA/mgr/ceph-x

[osd]
keyring = $DATA/osd/ceph-0/keyring
osd data = $DATA/osd/ceph-0
osd objectstore = bluestore
bluestore block create = true
bluestore block size = $(( ${S3_DISK_GB:-8} * 1024 * 1024 * 1024 ))
osd memory target = $(( ${S3_OSD_MEMORY_MB:-512} * 1024 * 1024 ))
bluestore cache autotune = true

[client.admin]
keyring = $DATA/admin.keyring

[client.rgw.gw]
keyring = $DATA/radosgw/ceph-rgw.gw/keyring
rgw frontends = beast port=$PORT
rgw data = $DATA/radosgw/ceph-rgw.gw
rgw dns name = s3
rgw thread pool size = 64
CONF
}

bootstrap() {
  local fsid
  fsid=$(cat /proc/sys/kernel/random/uuid)
  log "first start: creating cluster $fsid"
  mkdir -p "$DATA"/mon/ceph-a "$DATA"/mgr/ceph-x "$DATA"/osd/ceph-0 "$DATA"/radosgw/ceph-rgw.gw "$DATA"/run
  write_conf "$fsid"
  local tmp="$DATA/bootstrap"
  mkdir -p "$tmp"
  ceph-authtool --create-keyring "$tmp/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DATA/admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$tmp/mon.keyring" --import-keyring "$DATA/admin.keyring" >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$tmp/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$tmp/monmap" --keyring "$tmp/mon.keyring"
  cp "$tmp/mon.keyring" "$DATA/mon/ceph-a/keyring"
  rm -rf "$tmp"
}

CEPH=(ceph -c "$CONF" --connect-timeout 30)
PIDS=()
start() {  # start NAME CMD...: a daemon in the foreground, in the background of this script
  local name=$1; shift
  "$@" &
  PIDS+=($!)
  log "$name started (pid $!)"
}

stop_all() {
  log "stopping"
  rm -f "$DATA/run/ready"
  local i
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    # each daemon gets up to 20 s before the next one is asked
    for _ in $(seq 1 40); do kill -0 "${PIDS[$i]}" 2>/dev/null || break; sleep 0.5; done
  done
  wait || true
  exit 0
}
trap stop_all TERM INT

[ -f "$CONF" ] || bootstrap
mkdir -p "$DATA/run"
rm -f "$DATA/run/ready"   # the health check's mark: S3 answers with the environment's key
# the S3 port and the sizes may change between starts; the fsid and the monitor's address may not
write_conf "$(awk '/^fsid/ {print $3}' "$CONF")"

start mon ceph-mon -c "$CONF" -f -i a
"${CEPH[@]}" -s >/dev/null || die "the monitor did not answer within 30 s"

if [ ! -s "$DATA/mgr/ceph-x/keyring" ]; then
  "${CEPH[@]}" auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
    -o "$DATA/mgr/ceph-x/keyring"
fi
start mgr ceph-mgr -c "$CONF" -f -i x

if [ ! -f "$DATA/osd/ceph-0/ready" ]; then
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$("${CEPH[@]}" osd new "$osd_uuid")
  [ "$id" = 0 ] || die "expected OSD id 0, got $id"
  "${CEPH[@]}" auth get-or-create osd.0 mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *' \
    -o "$DATA/osd/ceph-0/keyring"
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" 2>&1 | tail -n 3
  "${CEPH[@]}" osd crush add-bucket node host >/dev/null
  "${CEPH[@]}" osd crush move node root=default >/dev/null
  "${CEPH[@]}" osd crush add osd.0 1.0 host=node >/dev/null
  touch "$DATA/osd/ceph-0/ready"
fi
start osd ceph-osd -c "$CONF" -f -i 0

if [ ! -s "$DATA/radosgw/ceph-rgw.gw/keyring" ]; then
  "${CEPH[@]}" auth get-or-create client.rgw.gw mon 'allow rw' osd 'allow rwx' mgr 'allow rw' \
    -o "$DATA/radosgw/ceph-rgw.gw/keyring"
fi
start rgw radosgw -c "$CONF" -f -n client.rgw.gw

# the S3 user and its keys, from the environment on every start
ADMIN=(radosgw-admin -c "$CONF" -n client.admin)
for _ in $(seq 1 60); do "${ADMIN[@]}" user info --uid churnops >/dev/null 2>&1 && break
  "${ADMIN[@]}" user create --uid churnops --display-name "churnops stack" \
    --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" >/dev/null 2>&1 && break
  sleep 1; done
"${ADMIN[@]}" user info --uid churnops >/dev/null 2>&1 || die "could not create the S3 user"
# the key named by the environment (created, or its secret updated), then any other key removed: a key
# rotation is an edit of the env file and a restart (removing a key waits for the gateway's cache: ~50 s)
keys=$("${ADMIN[@]}" user info --uid churnops | python3 -c 'import json, sys
for k in json.load(sys.stdin)["keys"]: print(k["access_key"], k["secret_key"])')
if ! grep -qxF "$S3_ACCESS_KEY $S3_SECRET_KEY" <<<"$keys"; then
  "${ADMIN[@]}" key create --uid churnops --key-type s3 --access-key "$S3_ACCESS_KEY" \
    --secret-key "$S3_SECRET_KEY" >/dev/null
fi
for old in $(awk '{print $1}' <<<"$keys"); do
  [ "$old" = "$S3_ACCESS_KEY" ] || "${ADMIN[@]}" key rm --uid churnops --key-type s3 --access-key "$old" >/dev/null
done
touch "$DATA/run/ready"
log "S3 ready on port $PORT (user churnops, access key $S3_ACCESS_KEY)"

# one daemon exiting ends the node (Compose restarts it)
set +e
wait -n "${PIDS[@]}"
code=$?
log "a daemon exited ($code); stopping the others"
stop_all
