"""The Chalice app of the remote flavour: the S3-triggered Lambda that splits workloads,
and the scheduled one that sizes the fleet.

An object created under ``workloads/JOB_ID/`` in the workload bucket is streamed, split into
task bundles and sent to the input queue; the job's manifest goes to the lease table. Every
minute, the provisioner sets the fleet's desired count from the input queue's backlog (if
`cloudkon fleet up` made a fleet for the prefix). The bucket and prefix are the stage's
environment variables in ``.chalice/config.json`` (`cloudkon setup` writes them); the
bucket matters only to ``chalice deploy`` and ``chalice package``, which subscribe the
handler to it.
"""

import os

from chalice import Chalice, Rate

from fleet.provisioner import on_lambda_schedule
from submitter.deployment import WORKLOADS_PREFIX
from submitter.s3_lambda import on_upload, subscribed_bucket

# The app's logger is named after it, and "cloudkon" is the package's: left to the Lambda
# runtime's handler (and to `cloudkon sandbox`'s), not set to ERROR on stdout by Chalice.
app = Chalice(app_name="cloudkon", configure_logs=False)


@app.on_s3_event(bucket=subscribed_bucket(os.path.dirname(os.path.abspath(__file__))),
                 prefix=WORKLOADS_PREFIX, events=["s3:ObjectCreated:*"])
def split_workload(event):
    """Split the uploaded workload into task bundles on the input queue."""
    # event.key: Chalice has undone S3's quote_plus. A split that runs out of time invokes
    # this function again with the same event, and continues from its progress record.
    on_upload(event.bucket, event.key, event.context, event.to_dict())


@app.schedule(Rate(1, unit=Rate.MINUTES))
def provision_workers(event):
    """Size the fleet to the input queue's backlog (fleet/provisioner.py)."""
    on_lambda_schedule()
