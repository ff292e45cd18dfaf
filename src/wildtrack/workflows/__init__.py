"""End-to-end jobs composed from the library's stages (what the CLI's bigger commands call)."""
