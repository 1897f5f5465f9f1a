"""The ``xpu_ipex`` backend: Intel Extension for PyTorch's ``llm.modules.GatedMLPMOE`` on Intel GPUs.

IPEX 2.8 is its last release (the project is archived) and imports only next to torch 2.8, so this
backend is usable only in an environment built around torch 2.8. Files: ``spec`` (support rules),
``converter`` (fresh canonical-layout copies, which IPEX may take over), ``experts``
(``IpexExperts``, monolithic: IPEX routes inside).
"""
