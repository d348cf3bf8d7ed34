-- Optional: exact claim ages for sms-sender's orphan recovery.
--
-- Without this column sms-sender still recovers rows left in 'sending' by a dead instance, but it
-- can only measure how long it has itself seen a row in 'sending', so after a restart an orphan
-- waits up to SENDING_TIMEOUT_SECS before it is reconciled. With it, the database stamps the
-- moment of each claim, orphans are found at once, and the Twilio lookup can start from the claim
-- instead of the message's creation. The service detects the column at start. Idempotent.

ALTER TABLE messages ADD COLUMN IF NOT EXISTS claimed_at TIMESTAMPTZ;

CREATE OR REPLACE FUNCTION sms_sender_stamp_claim()
RETURNS TRIGGER AS $$
BEGIN
  IF NEW.status = 'sending' AND OLD.status IS DISTINCT FROM 'sending' THEN
    NEW.claimed_at := now();
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS sms_sender_stamp_claim ON messages;
CREATE TRIGGER sms_sender_stamp_claim
  BEFORE UPDATE OF status ON messages
  FOR EACH ROW
  EXECUTE FUNCTION sms_sender_stamp_claim();

-- Orphan recovery reads 'sending' rows by age.
CREATE INDEX IF NOT EXISTS messages_sending_claimed_idx
  ON messages (claimed_at) WHERE status = 'sending';
