"""`python -m falconer_ray ...` is the `falconer` command."""

from falconer_ray.cli.main import main

main()
