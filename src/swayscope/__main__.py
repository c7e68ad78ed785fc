"""``python -m swayscope`` runs the CLI."""

from swayscope.cli import main

main()
