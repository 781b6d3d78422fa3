"""Sending: the SMTP connection pool and the mailer that works the delivery queue."""

from ceptoar.mail.pool import SmtpPool, SmtpReply

__all__ = ["SmtpPool", "SmtpReply"]
