"""relaywatch: POP/IMAP-before-SMTP beside any Dovecot version.

The package is called ``logwatch`` for history; the command is ``relaywatch`` because
``logwatch`` is the name of the Logwatch report tool found on many mail servers.
"""

__version__ = "0.1.0"
