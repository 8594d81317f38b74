import sys

from cloudkon.cli import console

sys.exit(console())
