"""The Chalice app of the remote flavour: the S3-triggered Lambda that splits workloads.

Its handler arrives with the submission issue (S3 upload -> bundles on SQS); until then
this app has no handlers and `chalice deploy` would deploy nothing.
"""

from chalice import Chalice

app = Chalice(app_name="cloudkon")
