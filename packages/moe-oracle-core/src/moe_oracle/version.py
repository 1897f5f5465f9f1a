__version__ = "0.1.0"
# The contract between core and backend plugins (BackendSpec, PriorityHint, Check, the experts and
# converter interfaces). A vendor package writes the number it was built against into each spec
# (``BackendSpec(plugin_api=1, ...)``, a literal, not this constant); core refuses other numbers.
PLUGIN_API_VERSION = 1
