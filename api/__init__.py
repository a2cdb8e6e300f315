"""Wire definitions: our own .proto files (upstream packages, names and field numbers)
and the Python modules generated from them by ``python -m api.generate``."""
