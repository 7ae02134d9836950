"""The OpenID Connect and OAuth 2.0 protocol, built on authlib's server framework."""
