"""Built-in scenarios, one file each. They are found through the `clbench.scenarios` entry points declared in
pyproject.toml, the same door third-party packages use."""
