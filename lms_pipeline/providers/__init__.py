"""Provider dialects, one folder each (client, simulator app, normalizers, options, capabilities), behind a registry
(``registry.py``): the only place a provider is looked up by name."""
