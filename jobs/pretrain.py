"""Entry point for `ray job submit`: the arguments of `falconer pretrain`, plus `--upload URI`.

    ray job submit --working-dir . -- python jobs/pretrain.py /mnt/shared/reviews/ \
        --out /mnt/shared/models/pretrained --instances 200000 --epochs 2 --gpu --workers 8 \
        --upload s3://bucket/models/pretrained

Inside a submitted job RAY_ADDRESS is set, so Ray Train spreads its workers (one GPU
each with `--gpu`) over the cluster. `--upload` copies the proxy folder once it is saved;
later runs start from it with `--proxy-base`.
"""

import sys

from falconer_ray.cli.upload import run_job

if __name__ == "__main__":
    run_job(["pretrain", *sys.argv[1:]])
