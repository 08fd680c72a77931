"""Results files → self-contained plotly HTML pages. Reads results files only; never imports torch."""
