from stock_datasource.plugins.tushare_broken.plugin import TushareBrokenPlugin

__all__ = ["TushareBrokenPlugin"]
