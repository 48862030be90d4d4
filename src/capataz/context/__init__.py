"""Results tasks publish for their dependents: keys, the encrypted store, the flow."""
