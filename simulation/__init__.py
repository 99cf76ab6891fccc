"""Floor 3: the synthetic world (corpus, styles, simulated users), `tailor simulate`, `tailor demo` and the default model's build."""
