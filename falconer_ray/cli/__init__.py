"""The `falconer` command: `main` (the commands), `options` (shared flags and errors),
`bench` (`falconer bench`), `upload` (`--upload` of `jobs/`)."""
