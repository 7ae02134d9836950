"""Accounts: passwords, users, sign-in sessions and the throttling of guessable secrets."""
