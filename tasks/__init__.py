"""Built-in task plugins, imported as ``streamgen.tasks``."""
