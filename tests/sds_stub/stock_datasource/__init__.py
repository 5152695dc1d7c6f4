"""Test stand-in for the stock_datasource project: its plugin manager, ``BasePlugin`` and
four plugins (tests/test_adapter.py, worker tests).  Tests put ``tests/sds_stub`` on
``sys.path``; it is never installed.  Plugin runs write nothing: they record their
keyword arguments in ``stock_datasource.core.base_plugin.CALLS``."""
