"""Entry point for `ray job submit`: annotate a run's sample with the configured teacher.

Takes the arguments of `falconer annotate`, plus `--upload URI`. With vLLM engines
on the cluster's GPUs (teacher settings in the run's config, or on the command line):

    ray job submit --working-dir . -- python jobs/annotate.py runs/people \
        --teacher vllm --teacher-model Qwen/Qwen2.5-7B-Instruct --upload s3://bucket/prefix

or against any OpenAI-compatible endpoint (the key stays in the job's environment):

    ray job submit --working-dir . --runtime-env-json '{"env_vars": {"OPENAI_API_KEY": "..."}}' -- \
        python jobs/annotate.py runs/people --teacher openai --teacher-model gpt-4o-mini \
        --teacher-url https://api.openai.com/v1 --teacher-api-key-env OPENAI_API_KEY

Inside a submitted job RAY_ADDRESS is set, so annotation joins the cluster and
Ray Data LLM spreads the engines (or HTTP workers) over its nodes.
"""

import sys

from falconer_ray.cli.upload import run_job

if __name__ == "__main__":
    run_job(["annotate", *sys.argv[1:]])
