"""``python -m cloud_exporter`` runs the CLI."""

import sys

from .cli import main

sys.exit(main())
