"""One module per op: ``render(latest, results_dir, plot) -> markdown`` for its README section."""
