from stock_datasource.plugins.tushare_adj_factor.plugin import TushareAdjFactorPlugin

__all__ = ["TushareAdjFactorPlugin"]
