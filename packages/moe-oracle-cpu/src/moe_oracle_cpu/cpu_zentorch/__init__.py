"""``cpu_zentorch``: AMD zentorch's ``zentorch_fused_moe`` on AMD EPYC (Zen) CPUs."""
