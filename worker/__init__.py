"""The EC2 worker daemon of the remote flavour (issue: the remote worker daemon)."""
