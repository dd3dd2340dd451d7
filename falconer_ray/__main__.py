"""`python -m falconer_ray ...` is the `falconer` command."""

from falconer_ray.cli import main

main()
