#!/bin/bash
# EC2 user data: installs CloudKon and runs `cloudkon worker` under systemd.
#
# Edit the three settings below, then give this file as the instance's user data
# (`aws ec2 run-instances --user-data file://deploy/user-data.sh ...`, or a launch template).
# For Amazon Linux 2023 and Ubuntu 22.04/24.04. The instance profile's role needs
# deploy/iam/worker-policy.json (plus worker-install-policy.json for an s3:// source).
# What it does is logged to /var/log/cloudkon-user-data.log.
#
# The unit files and the spot watcher are copies of deploy/cloudkon-worker.service,
# deploy/cloudkon-spot-watch.service and deploy/cloudkon-spot-watch (a test keeps them equal).
set -euo pipefail

# --- Settings ----------------------------------------------------------------------------
# The prefix given to `cloudkon setup --prefix`.
CLOUDKON_PREFIX=cloudkon
# What pip installs: a wheel in S3 (s3://BUCKET/KEY.whl), a https:// URL of a wheel, or a
# git+https:// URL of the repository.
CLOUDKON_SOURCE=s3://cloudkon-workloads-ACCOUNT/dist/cloudkon-0.1.0-py3-none-any.whl
# Options of `cloudkon worker`: one thread per vCPU suits CPU-bound tasks; more for tasks
# that mostly wait.
CLOUDKON_WORKER_ARGS="--threads $(nproc)"
# ------------------------------------------------------------------------------------------

exec > >(tee -a /var/log/cloudkon-user-data.log) 2>&1

imds=http://169.254.169.254/latest
token=$(curl -fsS -X PUT "$imds/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
region=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/placement/region")

# Python 3.11 or newer (and git, for a git+https:// source).
if command -v dnf >/dev/null; then
    dnf install -y -q python3.11 python3.11-pip git
    python=python3.11
else
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q python3 python3-venv git curl
    python=python3
fi
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "cloudkon needs Python 3.11 or newer; $python is older" >&2
    exit 1
}

id cloudkon >/dev/null 2>&1 ||
    useradd --system --home-dir /var/lib/cloudkon --shell /usr/sbin/nologin cloudkon
"$python" -m venv /opt/cloudkon/venv
/opt/cloudkon/venv/bin/pip install -q --upgrade pip boto3
source=$CLOUDKON_SOURCE
if [[ $source == s3://* ]]; then
    local_copy=/tmp/$(basename "$source")
    AWS_DEFAULT_REGION=$region /opt/cloudkon/venv/bin/python - "$source" "$local_copy" <<'PY'
import sys

import boto3

bucket, _, key = sys.argv[1].removeprefix("s3://").partition("/")
boto3.client("s3").download_file(bucket, key, sys.argv[2])
PY
    source=$local_copy
fi
/opt/cloudkon/venv/bin/pip install -q "$source"

install -d -m 755 /etc/cloudkon
cat > /etc/cloudkon/worker.env <<ENV
CLOUDKON_PREFIX=$CLOUDKON_PREFIX
AWS_REGION=$region
AWS_DEFAULT_REGION=$region
CLOUDKON_WORKER_ARGS="$CLOUDKON_WORKER_ARGS"
ENV

cat > /etc/systemd/system/cloudkon-worker.service <<'UNIT'
# systemd unit of the CloudKon worker daemon. Installed as
# /etc/systemd/system/cloudkon-worker.service by deploy/user-data.sh.
#
# Stop (systemctl stop, shutdown, a spot interruption seen by cloudkon-spot-watch) sends
# SIGTERM to the daemon alone (KillMode=mixed): it receives no more, gives back what has
# not started, and lets running tasks finish for --drain-seconds (110 by default). Their
# processes must not get the SIGTERM themselves, hence mixed. TimeoutStopSec leaves ten
# seconds more than the drain for giving work back and exiting; only then SIGKILL.

[Unit]
Description=CloudKon worker: runs the task bundles of an SQS queue
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=cloudkon
Group=cloudkon
# CLOUDKON_PREFIX, AWS_REGION and CLOUDKON_WORKER_ARGS (e.g. "--threads 8").
EnvironmentFile=/etc/cloudkon/worker.env
StateDirectory=cloudkon
WorkingDirectory=/var/lib/cloudkon
ExecStart=/opt/cloudkon/venv/bin/cloudkon worker --no-create --log-json --drain-seconds 110 $CLOUDKON_WORKER_ARGS
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=120
Restart=on-failure
RestartSec=5
# Exit 2 is a usage or set-up error (no queue: run `cloudkon setup`): restarting cannot mend it.
RestartPreventExitStatus=2
LimitNOFILE=65536
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
ProtectHome=yes

[Install]
WantedBy=multi-user.target
UNIT

cat > /etc/systemd/system/cloudkon-spot-watch.service <<'SPOT_UNIT'
# Stops the CloudKon worker as soon as EC2 announces a spot interruption (two minutes
# ahead), so that the worker's drain runs within the notice instead of being cut short.
# Installed as /etc/systemd/system/cloudkon-spot-watch.service by deploy/user-data.sh.

[Unit]
Description=Stop the CloudKon worker when a spot interruption is announced
After=cloudkon-worker.service
BindsTo=cloudkon-worker.service

[Service]
Type=simple
ExecStart=/usr/local/bin/cloudkon-spot-watch
Restart=on-failure

[Install]
WantedBy=cloudkon-worker.service
SPOT_UNIT

cat > /usr/local/bin/cloudkon-spot-watch <<'SPOT_SCRIPT'
#!/bin/sh
# Polls the instance metadata every 5 s; when EC2 announces a spot interruption (two
# minutes ahead), stops the CloudKon worker so that its drain fits within the notice.
# Installed as /usr/local/bin/cloudkon-spot-watch by deploy/user-data.sh.
imds=http://169.254.169.254/latest
while sleep 5; do
    token=$(curl -fsS -m 2 -X PUT "$imds/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60") || continue
    if curl -fsS -m 2 -o /dev/null -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/spot/instance-action"; then
        echo "spot interruption announced: stopping cloudkon-worker"
        exec systemctl stop --no-block cloudkon-worker.service
    fi
done
SPOT_SCRIPT
chmod 755 /usr/local/bin/cloudkon-spot-watch

systemctl daemon-reload
systemctl enable --now cloudkon-worker.service cloudkon-spot-watch.service
echo "cloudkon worker started: journalctl -u cloudkon-worker -f"
