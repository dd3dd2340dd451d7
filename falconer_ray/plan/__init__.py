"""The plan: what a user's instruction becomes (`schema`), how the teacher writes it
(`planner`), and how any answerer runs it over documents (`execute`)."""
