"""What a run cost: tokens, calls and seconds per stage, and a dollar figure.

Hosted endpoints bill tokens; a local teacher (embedded on CPU, vLLM on GPUs)
and the proxy bill device time. Both are priced from `TeacherConfig.price`,
so the report can compare "teacher on everything" with "teacher on a sample
plus proxy" in the same unit. Zero prices give zero dollars, never a guess.
"""

from __future__ import annotations

from falconer_ray.config import RunConfig


def teacher_devices(cfg: RunConfig) -> int:
    """Devices a local teacher holds while it works (0 for a hosted endpoint)."""
    t = cfg.teacher
    if t.kind == "openai":
        return 0
    if t.kind == "vllm":
        return t.tensor_parallel_size * t.concurrency
    return 1


def stage_cost(stats: dict, cfg: RunConfig) -> dict:
    """Tokens, calls, seconds and dollars of one teacher stage (TeacherStats as a dict)."""
    p = cfg.teacher.price
    prompt, completion = int(stats.get("prompt_tokens", 0)), int(stats.get("completion_tokens", 0))
    seconds = float(stats.get("seconds", 0.0))
    usd = prompt / 1e6 * p.prompt_per_1m + completion / 1e6 * p.completion_per_1m
    usd += seconds / 3600 * teacher_devices(cfg) * p.gpu_hour
    return {"calls": int(stats.get("calls", 0)), "prompt_tokens": prompt, "completion_tokens": completion,
            "seconds": round(seconds, 3), "usd": round(usd, 6)}


def proxy_cost(trained: dict, mined: dict, cfg: RunConfig) -> dict:
    """Device time of training (workers x wall) and mining (max actors x wall)."""
    train_s = float(trained.get("wall_s") or 0.0)
    mine_s = float(mined.get("mine_s") or 0.0)
    actors = mined.get("actors") or [1, 1]
    device_s = train_s * cfg.train.num_workers + mine_s * int(actors[-1] or 1)
    return {"calls": mined.get("docs_in"), "train_s": round(train_s, 3), "mine_s": round(mine_s, 3),
            "device_hours": round(device_s / 3600, 6), "usd": round(device_s / 3600 * cfg.teacher.price.gpu_hour, 6)}


def run_cost(plan_stats: dict, annotate_stats: dict, trained: dict, mined: dict, cfg: RunConfig) -> dict:
    """The `cost` block of report.json."""
    plan = stage_cost(plan_stats.get("stats") or {}, cfg)
    annotate = stage_cost(annotate_stats.get("teacher", {}).get("stats") or {}, cfg)
    proxy = proxy_cost(trained, mined, cfg)
    teacher = {k: plan[k] + annotate[k] for k in ("calls", "prompt_tokens", "completion_tokens")}
    teacher["seconds"] = round(plan["seconds"] + annotate["seconds"], 3)
    teacher["usd"] = round(plan["usd"] + annotate["usd"], 6)
    return {
        "price": cfg.teacher.price.model_dump(),
        "teacher": teacher,
        "stages": {"plan": plan, "annotate": annotate, "proxy": proxy},
        "usd": round(teacher["usd"] + proxy["usd"], 6),
    }
