"""The browser side of sign-in: the authorization endpoint, login, consent and logout pages."""
