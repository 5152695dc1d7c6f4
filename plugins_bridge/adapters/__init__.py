"""Adapters that present plugins of other projects as stockq plugins."""
