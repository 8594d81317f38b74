"""Fleets of workers on EC2: ``cloudkon fleet up|down|status|scale`` and the provisioner
that sizes the Auto Scaling group to the backlog (also run by the Lambda's schedule)."""
