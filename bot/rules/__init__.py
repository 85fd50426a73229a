"""Rules: the engine that matches posts against the rules directory, hot reload and backtests."""
