"""The orders app: customers place orders; tasks charge them, mail receipts and rebuild reports."""
