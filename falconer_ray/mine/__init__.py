"""Mining: the trained proxy runs the plan over the whole corpus with Ray Data
(`driver`), in actor pools (`actors`), committing resumable units (`units`) that are
split into results/, filtered/ and errors/ at the end (`outputs`); `runtime_choice`
and `cascade` decide what answers (int8 or torch; the proxy or the teacher)."""
