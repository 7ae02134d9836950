"""Mirroring accounts and groups from Active Directory or OpenLDAP (ldap3), and password checks by LDAP
bind. Filled by the directory-sync issue; nothing runs from here yet."""
