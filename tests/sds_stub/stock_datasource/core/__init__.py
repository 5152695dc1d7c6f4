"""Core of the stand-in: the plugin base class and the plugin manager."""
