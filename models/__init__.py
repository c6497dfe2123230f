"""Model package: pickle-surface layer classes, the YAML registry and builder, and model YAMLs."""
