"""OpenID Connect identity provider with multi-factor authentication for municipal administrations."""
