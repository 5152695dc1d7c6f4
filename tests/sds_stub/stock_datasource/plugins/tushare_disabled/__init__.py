from stock_datasource.plugins.tushare_disabled.plugin import TushareDisabledPlugin

__all__ = ["TushareDisabledPlugin"]
