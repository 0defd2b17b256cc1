# Registers the peftcore pytest plugin and the session fixtures; nothing else lives here.
pytest_plugins = ["peftcore.pytest_plugin", "fixtures"]
