"""``python -m mercato`` runs the CLI."""

from mercato.cli import main

main()
