"""Floor 3: the `tailor` command line and the one-machine runner (`tailor up`, `tailor learn`)."""
