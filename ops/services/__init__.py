"""Services: what commands do, independent of click."""
