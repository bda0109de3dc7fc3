"""The plugin machinery: the hook contract, the component registry and the plugin manager."""
