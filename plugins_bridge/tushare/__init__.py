"""TuShare Pro access over plain HTTP (:mod:`plugins_bridge.tushare.client`)."""

from plugins_bridge.tushare.client import (
    DEFAULT_URL,
    TushareApiError,
    TushareBadRequest,
    TushareClient,
    TushareError,
    TushareNetworkError,
    TusharePermissionError,
    TushareRateLimited,
    TushareSchemaError,
    TushareTokenError,
    error_for_code,
    rate_limit_wait,
)

__all__ = [
    "DEFAULT_URL",
    "TushareApiError",
    "TushareBadRequest",
    "TushareClient",
    "TushareError",
    "TushareNetworkError",
    "TusharePermissionError",
    "TushareRateLimited",
    "TushareSchemaError",
    "TushareTokenError",
    "error_for_code",
    "rate_limit_wait",
]
