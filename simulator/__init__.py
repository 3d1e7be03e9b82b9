"""lowbit.simulator: cycle-level systolic-array simulator. Not built yet (issue 4)."""
