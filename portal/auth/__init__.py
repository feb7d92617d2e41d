"""Sign-in: local accounts, OpenID Connect, personal API tokens, and their audit trail."""
