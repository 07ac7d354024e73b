"""LaTeX tables, figures and checks of the paper from run records (never imports torch)."""
