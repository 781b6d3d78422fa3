"""The built-in subscriber mailbox: an SMTP server that files mail in a Maildir per recipient.

It is the embedded default relay, and the mailbox the demo and the tests read.
"""

from ceptoar.mailbox.maildir import MailboxEntry, count, list_messages, mailbox_path, read_message
from ceptoar.mailbox.server import MaildirHandler, start_mailbox

__all__ = [
    "MailboxEntry",
    "MaildirHandler",
    "count",
    "list_messages",
    "mailbox_path",
    "read_message",
    "start_mailbox",
]
