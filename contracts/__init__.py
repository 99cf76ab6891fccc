"""Floor 1: what the online and the learning path agree on.

Settings, the Redis key layout and records, the adapter store and version
registry, model loading and features, the shipped default model. Imports no
other package of the project.
"""
