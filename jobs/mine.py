"""Entry point for `ray job submit`: the same arguments as `falconer mine`.

    ray job submit --working-dir . -- python jobs/mine.py "INSTRUCTION" CORPUS --out DIR --gpu

Inside a submitted job RAY_ADDRESS is set, so the pipeline joins the cluster
instead of starting a local Ray.
"""

import sys

from falconer_ray.cli import app

if __name__ == "__main__":
    app(["mine", *sys.argv[1:]])
