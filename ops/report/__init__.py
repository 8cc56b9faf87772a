"""`ops report`, `ops run diff` and the detailed `ops run status RUN`: reading runs back."""
