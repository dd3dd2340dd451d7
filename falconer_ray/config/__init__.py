"""Every setting of a run in one typed object (`RunConfig`), settable from a YAML file
and CLI flags: the run's stages (`run`), the teacher backends (`teacher`) and the one
price table (`prices`)."""

from falconer_ray.config.prices import Hardware, Prices, StageHardware
from falconer_ray.config.run import MineConfig, ProxyConfig, QuoteConfig, RunConfig, TrainConfig, merge
from falconer_ray.config.teacher import (EmbeddedTeacherConfig, OpenAITeacherConfig, TeacherConfig,
                                         VLLMTeacherConfig)

__all__ = ["EmbeddedTeacherConfig", "Hardware", "MineConfig", "OpenAITeacherConfig", "Prices", "ProxyConfig",
           "QuoteConfig", "RunConfig", "StageHardware", "TeacherConfig", "TrainConfig", "VLLMTeacherConfig", "merge"]
