"""lowbit.roofline: roofline model and plots. Not built yet (issue 5)."""
