"""falconer-ray: LLM-planned, proxy-executed knowledge mining on Ray.

    from falconer_ray import get_label, get_span
    get_label(["Great film!"], "Is this review positive?", model="runs/imdb-demo")
"""

__version__ = "0.1.0"

__all__ = ["get_label", "get_span", "get_spans", "label_scores", "load_results", "results_dataset", "load_plan",
           "load_report", "Plan"]


def __getattr__(name):
    # Lazy: `falconer --help` and plan editing should not pay for importing torch.
    if name in ("get_label", "get_span", "get_spans", "label_scores", "load_results", "results_dataset", "load_plan",
                "load_report"):
        from falconer_ray import api

        return getattr(api, name)
    if name == "Plan":
        from falconer_ray.plan.schema import Plan

        return Plan
    raise AttributeError(name)
