"""Built-in method adapters, one module per method, registered through the evalkit.methods entry points."""
