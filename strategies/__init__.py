"""Built-in strategies, one file each. They are found through the `clbench.strategies` entry points
declared in pyproject.toml, the same door third-party packages use."""
