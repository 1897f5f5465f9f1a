__version__ = "0.1.0"
# The moe_oracle.PLUGIN_API_VERSION these specs were written against (a literal on purpose:
# core refuses the specs when its own number differs, instead of failing somewhere later).
PLUGIN_API = 1
