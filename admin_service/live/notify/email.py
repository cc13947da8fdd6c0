"""E-mail over SMTP: plain-text and HTML parts; STARTTLS (587), implicit TLS (465) or none,
with optional authentication. The Message-ID carries the delivery id, so a mail client or a
filter can drop a repeat."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate

from admin_service.live.notify.channels import Channel
from admin_service.live.notify.messages import Rendered
from admin_service.live.notify.senders import DeliveryError


def build(channel: Channel, message: Rendered, delivery_id: str) -> EmailMessage:
    assert channel.sender is not None
    mail = EmailMessage()
    mail["Subject"] = message.title
    mail["From"] = channel.sender
    mail["To"] = ", ".join(channel.recipients)
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = f"<{delivery_id}@admin-service>"
    mail["X-Delivery-Id"] = delivery_id
    mail.set_content(message.text)
    mail.add_alternative(message.html, subtype="html")
    return mail


def send(channel: Channel, message: Rendered, delivery_id: str, body: dict[str, object]) -> None:
    assert channel.host is not None
    mail = build(channel, message, delivery_id)
    context = ssl.create_default_context()
    try:
        smtp: smtplib.SMTP
        if channel.security == "tls":
            smtp = smtplib.SMTP_SSL(channel.host, channel.port, timeout=channel.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(channel.host, channel.port, timeout=channel.timeout_s)
        with smtp:
            if channel.security == "starttls":
                smtp.starttls(context=context)
            if channel.username and channel.password:
                smtp.login(channel.username, channel.password)
            refused = smtp.send_message(mail)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryError(f"SMTP {channel.host}:{channel.port}: {type(exc).__name__}: {str(exc)[:300]}") from None
    if refused:
        raise DeliveryError(f"SMTP refused recipients: {', '.join(sorted(refused))}")
