from stock_datasource.plugins.tushare_daily.plugin import TushareDailyPlugin

__all__ = ["TushareDailyPlugin"]
