"""Training: one trainer (`trainer`, `loop`) for the three stages (`stages`), and the
run plumbing (`run`: metrics, preemption, distributed start-up)."""
