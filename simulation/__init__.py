"""Floor 3: the synthetic world (corpus, styles, simulated users) and what runs in it.

`tailor simulate`, `tailor demo`, and the build of the default model and its guard.
"""
