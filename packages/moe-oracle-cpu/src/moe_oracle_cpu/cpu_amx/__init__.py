"""``cpu_amx``: an SGLang-style AMX fused-experts kernel (``fused_experts_cpu``) on VNNI-packed weights."""
