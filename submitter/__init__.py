"""Workload -> bundles -> SQS, for the Lambda and `cloudkon submit --direct` (issue: submission)."""
