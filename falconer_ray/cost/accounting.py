"""What a run cost: calls, tokens and seconds per stage, in dollars from the one price table.

The quote, report.json's `cost` block, report.html and the CLI summary all call
`stage_usd`, so a stage's seconds and tokens give the same dollars wherever they are
shown. Zero prices give zero dollars, never a guess.
"""

from __future__ import annotations

from falconer_ray.config import Prices, RunConfig


def stage_usd(prices: Prices, stage: str, seconds: float, prompt_tokens: float = 0, completion_tokens: float = 0) -> float:
    """Dollars of `seconds` on a stage's hardware ("teacher", "train", "mine"), plus the
    teacher's tokens."""
    return seconds * prices.per_second(stage) + prices.tokens_usd(prompt_tokens, completion_tokens)


def teacher_stage(stats: dict, prices: Prices) -> dict:
    """Calls, tokens, seconds and dollars of one teacher stage (TeacherStats as a dict)."""
    prompt, completion = int(stats.get("prompt_tokens", 0)), int(stats.get("completion_tokens", 0))
    seconds = float(stats.get("seconds", 0.0))
    return {"calls": int(stats.get("calls", 0)), "prompt_tokens": prompt, "completion_tokens": completion,
            "seconds": round(seconds, 3), "usd": round(stage_usd(prices, "teacher", seconds, prompt, completion), 9)}


def proxy_stage(trained: dict, mined: dict, prices: Prices) -> dict:
    """Training and mining, each on its own hardware."""
    train_s = float(trained.get("wall_s") or 0.0)
    mine_s = float(mined.get("mine_s") or 0.0)
    usd = stage_usd(prices, "train", train_s) + stage_usd(prices, "mine", mine_s)
    return {"calls": mined.get("docs_in"), "train_s": round(train_s, 3), "mine_s": round(mine_s, 3),
            "usd": round(usd, 9)}


def run_cost(plan_stats: dict, annotate_stats: dict, trained: dict, mined: dict, cfg: RunConfig) -> dict:
    """The `cost` block of report.json."""
    plan = teacher_stage(plan_stats.get("stats") or {}, cfg.prices)
    annotate = teacher_stage(annotate_stats.get("teacher", {}).get("stats") or {}, cfg.prices)
    proxy = proxy_stage(trained, mined, cfg.prices)
    teacher = {k: plan[k] + annotate[k] for k in ("calls", "prompt_tokens", "completion_tokens")}
    teacher["seconds"] = round(plan["seconds"] + annotate["seconds"], 3)
    teacher["usd"] = round(plan["usd"] + annotate["usd"], 9)
    return {
        "prices": cfg.prices.model_dump(),
        "teacher": teacher,
        "stages": {"plan": plan, "annotate": annotate, "proxy": proxy},
        "usd": round(teacher["usd"] + proxy["usd"], 9),
    }
