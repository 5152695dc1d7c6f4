"""The stand-in's plugins, one package each (plugin.py and config.json)."""
