"""Entry point for one stage on a cluster, plus `--upload URI`:

    python jobs/stage.py plan "INSTRUCTION" --out RUN_DIR [flags] [--upload s3://bucket/prefix]
    python jobs/stage.py annotate|train|run RUN_DIR [flags] [--upload s3://bucket/prefix]
"""

import sys

from falconer_ray.cli.upload import run_job

STAGES = {"plan", "annotate", "train", "run"}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in STAGES:
        sys.exit(f"usage: python jobs/stage.py {{{'|'.join(sorted(STAGES))}}} ARGS... [--upload URI]")
    run_job(sys.argv[1:])
