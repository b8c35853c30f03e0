"""``python -m rumor``: the ``rumor`` command (network up runs its children this way, so ps names them)."""

from rumor.cli import main

main()
