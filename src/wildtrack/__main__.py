"""``python -m wildtrack`` is the ``wildtrack`` command."""

from wildtrack.cli import main

main()
