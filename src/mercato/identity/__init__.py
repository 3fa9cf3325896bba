"""Users, addresses and authentication: passwords, tokens, sessions, OIDC sign-in, API keys and roles."""
