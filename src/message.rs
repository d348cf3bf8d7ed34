//! The domain types a message carries through the pipeline, free of any wire format.

use std::fmt;

/// The values of a row's `status` this service writes: the database contract of
/// `sql/schema.sql` (`pending` rows are moved to `queued_for_send` by the database's trigger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting to be claimed.
    QueuedForSend,
    /// Claimed by an instance (under the lease stamped in `sent_at`).
    Sending,
    /// Twilio accepted it (or a receipt says it left Twilio).
    Sent,
    /// It cannot be sent, or the carrier refused it.
    Failed,
    /// The carrier confirmed delivery.
    Delivered,
    /// The carrier could not deliver it.
    Undelivered,
}

impl Status {
    /// The text stored in the column.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::QueuedForSend => "queued_for_send",
            Status::Sending => "sending",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Delivered => "delivered",
            Status::Undelivered => "undelivered",
        }
    }

    /// The row status a Twilio `MessageStatus` moves a row to, for the statuses a row shows
    /// (`queued`, `accepted`, `sending`, `scheduled`, `read`… change nothing).
    pub fn from_receipt(message_status: &str) -> Option<Status> {
        match message_status {
            "sent" => Some(Status::Sent),
            "failed" => Some(Status::Failed),
            "delivered" => Some(Status::Delivered),
            "undelivered" => Some(Status::Undelivered),
            _ => None,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message row's primary key: a UUID in canonical text form.
///
/// Validated on construction so it can be put into a URL filter (`id=eq.…`) without escaping and
/// without any risk of smuggling other PostgREST operators in.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(String);

impl MessageId {
    /// Accept `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex, any case; kept lower-case).
    pub fn parse(text: &str) -> Option<MessageId> {
        let b = text.as_bytes();
        let ok = b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            });
        ok.then(|| MessageId(text.to_ascii_lowercase()))
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

/// A message this instance has claimed (`status='sending'`), with what is needed to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedMessage {
    /// The row.
    pub id: MessageId,
    /// The SMS text (`messages.content`): personal data, logged at trace level only.
    pub body: String,
    /// The conversation's `phone_number`; `None` when the conversation does not exist.
    pub phone_number: Option<String>,
    /// The SID a *previous* attempt recorded (a row requeued by the app after `failed` or
    /// `undelivered` keeps it until this attempt records its own). Never proof that this claim's
    /// message was created.
    pub previous_sid: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_strict_uuids() {
        let id = MessageId::parse("6F1C2E0A-1234-4abc-8def-0123456789ab").unwrap();
        assert_eq!(id.as_str(), "6f1c2e0a-1234-4abc-8def-0123456789ab");
        for bad in [
            "",
            "6f1c2e0a-1234-4abc-8def-0123456789a",
            "6f1c2e0a-1234-4abc-8def-0123456789abc",
            "6f1c2e0a_1234-4abc-8def-0123456789ab",
            "6f1c2e0a-1234-4abc-8def-0123456789ag",
            "6f1c2e0a-1234-4abc-8def-01234&id=gt.",
        ] {
            assert!(MessageId::parse(bad).is_none(), "{bad}");
        }
    }
}
