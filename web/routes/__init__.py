"""HTTP routes, one module per resource; each only translates HTTP into registry messages."""
