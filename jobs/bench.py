"""Entry point for a benchmark on a cluster: the arguments of `falconer bench`, plus `--upload URI`.

    ray job submit --working-dir . -- python jobs/bench.py throughput --docs 100000 \
        --json /mnt/shared/bench/throughput.json --upload s3://bucket/bench

`--upload` copies the `--json` file to URI/NAME once the benchmark has succeeded.
"""

import sys

from falconer_ray.cli.upload import run_job

if __name__ == "__main__":
    run_job(["bench", *sys.argv[1:]])
