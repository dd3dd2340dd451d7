"""`falconer eval`: proxies trained on labelled datasets against gold and the teacher
(`evaluate`, `selection`, `datasets`), and the demo's gold check."""
