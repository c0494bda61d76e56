"""Job functions `run(config, workdir)` behind the experiments/ entrypoints.

Each one is the single library call its absl main makes; tests call the same function with the
config's `quick` variant.
"""
