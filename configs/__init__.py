"""ml_collections config files (configs are code; see README "Safe loading")."""
