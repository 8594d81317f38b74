#!/bin/bash
# EC2 user data: installs CloudKon and runs `cloudkon worker` under systemd.
#
# `cloudkon fleet up` fills in the three settings below and puts the result into the
# fleet's launch template. By hand: edit them, then give this file as the instance's user
# data (`aws ec2 run-instances --user-data file://deploy/user-data.sh ...`).
# For Amazon Linux 2023 and Ubuntu 22.04/24.04. The instance profile's role needs
# deploy/iam/worker-policy.json (plus worker-install-policy.json for an s3:// source, and
# worker-logs-policy.json for the CloudWatch agent).
# What it does is logged to /var/log/cloudkon-user-data.log.
#
# The unit files, the spot watcher and the CloudWatch agent's configuration are copies of
# deploy/cloudkon-worker.service, deploy/cloudkon-spot-watch.service,
# deploy/cloudkon-spot-watch and deploy/cloudwatch-agent.json (a test keeps them equal).
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
instance_id=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/instance-id")

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
CLOUDKON_INSTANCE_ID=$instance_id
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
#
# Tasks never outlive the daemon: after a kill -9 of it, its task guardian
# (cloudkon/guardian.py) SIGKILLs the tasks' process groups, and when the unit stops or
# restarts, KillMode=mixed sends SIGKILL to every process left in the unit's cgroup, tasks
# that left their group included. Tasks run as the unprivileged user cloudkon with a
# private /tmp, /usr and /etc read-only, no home directories, no new privileges, and an
# environment without the worker's AWS settings (cloudkon/taskenv.py; --task-env NAME in
# CLOUDKON_WORKER_ARGS passes a variable of worker.env on). SECURITY.md says what remains.
#
# Its log, JSON lines with one CloudWatch EMF line per bundle among them, goes to
# /var/log/cloudkon/worker.log, which the CloudWatch agent ships (deploy/cloudwatch-agent.json).

[Unit]
Description=CloudKon worker: runs the task bundles of an SQS queue
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=cloudkon
Group=cloudkon
# CLOUDKON_PREFIX, AWS_REGION, CLOUDKON_INSTANCE_ID and CLOUDKON_WORKER_ARGS (e.g. "--threads 8").
EnvironmentFile=/etc/cloudkon/worker.env
StateDirectory=cloudkon
WorkingDirectory=/var/lib/cloudkon
LogsDirectory=cloudkon
StandardOutput=append:/var/log/cloudkon/worker.log
StandardError=append:/var/log/cloudkon/worker.log
ExecStart=/opt/cloudkon/venv/bin/cloudkon worker --no-create --log-json --emf-metrics --drain-seconds 110 $CLOUDKON_WORKER_ARGS
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
# ahead) or Auto Scaling terminates the instance, so that the worker's drain runs within
# the notice (or the lifecycle hook's hold) instead of being cut short.
# Installed as /etc/systemd/system/cloudkon-spot-watch.service by deploy/user-data.sh.

[Unit]
Description=Stop the CloudKon worker when a spot interruption or a scale-in is announced
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
# minutes ahead), or Auto Scaling takes the instance out of service (scale-in: the
# termination lifecycle hook holds it meanwhile), stops the CloudKon worker so that its
# drain runs before the instance goes.
# Installed as /usr/local/bin/cloudkon-spot-watch by deploy/user-data.sh.
imds=http://169.254.169.254/latest
while sleep 5; do
    token=$(curl -fsS -m 2 -X PUT "$imds/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60") || continue
    if curl -fsS -m 2 -o /dev/null -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/spot/instance-action"; then
        echo "spot interruption announced: stopping cloudkon-worker"
        exec systemctl stop --no-block cloudkon-worker.service
    fi
    state=$(curl -fsS -m 2 -H "X-aws-ec2-metadata-token: $token" "$imds/meta-data/autoscaling/target-lifecycle-state") || state=
    if [ "$state" = Terminated ]; then
        echo "auto scaling terminates this instance: stopping cloudkon-worker"
        exec systemctl stop --no-block cloudkon-worker.service
    fi
done
SPOT_SCRIPT
chmod 755 /usr/local/bin/cloudkon-spot-watch

# The worker's log (and its EMF metric lines) to CloudWatch Logs, /cloudkon/PREFIX/workers.
# Without the agent the worker runs all the same.
install -d -m 755 /opt/aws/amazon-cloudwatch-agent/etc
cat > /opt/aws/amazon-cloudwatch-agent/etc/cloudkon.json <<'CW_AGENT'
{
  "agent": {"run_as_user": "root"},
  "logs": {
    "logs_collected": {
      "files": {
        "collect_list": [
          {
            "file_path": "/var/log/cloudkon/worker.log",
            "log_group_name": "/cloudkon/PREFIX/workers",
            "log_stream_name": "{instance_id}",
            "retention_in_days": 14,
            "timezone": "UTC"
          }
        ]
      }
    }
  }
}
CW_AGENT
sed -i "s|/cloudkon/PREFIX/|/cloudkon/$CLOUDKON_PREFIX/|" /opt/aws/amazon-cloudwatch-agent/etc/cloudkon.json
if command -v dnf >/dev/null; then
    dnf install -y -q amazon-cloudwatch-agent || echo "warning: no CloudWatch agent" >&2
else
    curl -fsS -o /tmp/amazon-cloudwatch-agent.deb \
        https://amazoncloudwatch-agent.s3.amazonaws.com/ubuntu/amd64/latest/amazon-cloudwatch-agent.deb &&
        dpkg -i -E /tmp/amazon-cloudwatch-agent.deb || echo "warning: no CloudWatch agent" >&2
fi
if [ -x /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl ]; then
    /opt/aws/amazon-cloudwatch-agent/bin/amazon-cloudwatch-agent-ctl -a fetch-config -m ec2 -s \
        -c file:/opt/aws/amazon-cloudwatch-agent/etc/cloudkon.json || echo "warning: CloudWatch agent not started" >&2
fi
if [ -d /etc/logrotate.d ]; then
    cat > /etc/logrotate.d/cloudkon <<'ROTATE'
/var/log/cloudkon/worker.log {
    daily
    rotate 7
    compress
    missingok
    copytruncate
}
ROTATE
fi

systemctl daemon-reload
systemctl enable --now cloudkon-worker.service cloudkon-spot-watch.service
echo "cloudkon worker started: tail -f /var/log/cloudkon/worker.log"
