"""Entry point for `ray job submit`: the arguments of `falconer mine`, plus `--upload URI`.

    ray job submit --working-dir . -- python jobs/mine.py "INSTRUCTION" CORPUS --out DIR --gpu \
        --upload s3://bucket/prefix

Inside a submitted job RAY_ADDRESS is set, so the pipeline joins the cluster
instead of starting a local Ray. `--upload` copies the run directory to object
storage once the run has succeeded.
"""

import sys

from falconer_ray.cli.upload import run_job

if __name__ == "__main__":
    run_job(["mine", *sys.argv[1:]])
