"""Built-in capture adapters of attn-plugins, each a plugin module registered through the entry point."""
