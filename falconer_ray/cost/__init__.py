"""What a run costs, before (`quote`) and after (`accounting`), against the teacher alone
(`baseline`), all priced from one table (`falconer_ray.config.prices`)."""
