"""Entry point for one stage on a cluster: `python jobs/stage.py annotate|train|run RUN_DIR [flags]`."""

import sys

from falconer_ray.cli import app

STAGES = {"plan", "annotate", "train", "run"}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        sys.exit(f"usage: python jobs/stage.py {{{'|'.join(sorted(STAGES))}}} ARGS...")
    app(sys.argv[1:])
