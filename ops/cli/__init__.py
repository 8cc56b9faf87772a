"""click adapters: parse, call one service, render."""
