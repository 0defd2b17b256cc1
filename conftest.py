# Registers the peftcore pytest plugin and the session fixtures; nothing else lives here.
# (The fixture modules are named one by one: the name "fixtures" alone is pytest's own plugin.)
pytest_plugins = ["peftcore.pytest_plugin", "fixtures.models", "fixtures.data"]
