-- sms-sender: the tables and trigger the service expects (from the original service's README).
-- Safe to run on a fresh database; on Supabase run it in the SQL editor, then make sure the
-- `messages` table is in the `supabase_realtime` publication (the block at the end does it).

CREATE TABLE IF NOT EXISTS users (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  created_at TIMESTAMPTZ DEFAULT now()
);

CREATE TABLE IF NOT EXISTS conversations (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id UUID REFERENCES users(id) NOT NULL,
  phone_number VARCHAR(20) NOT NULL,
  status VARCHAR(50) DEFAULT 'active',
  created_at TIMESTAMPTZ DEFAULT now(),
  updated_at TIMESTAMPTZ DEFAULT now()
);

CREATE TABLE IF NOT EXISTS messages (
  id UUID PRIMARY KEY DEFAULT gen_random_uuid(),
  conversation_id UUID REFERENCES conversations(id) NOT NULL,
  user_id UUID REFERENCES users(id) NOT NULL,
  role VARCHAR(50) NOT NULL,
  content TEXT NOT NULL,
  direction VARCHAR(20) NOT NULL,
  twilio_message_sid VARCHAR(100),
  status VARCHAR(50),
  created_at TIMESTAMPTZ DEFAULT now(),
  sent_at TIMESTAMPTZ,
  delivered_at TIMESTAMPTZ
);

-- The service's catch-up query reads queued outbound rows; keep it cheap on a large table.
CREATE INDEX IF NOT EXISTS messages_queued_idx
  ON messages (id) WHERE status IN ('queued_for_send', 'sending');

-- New outbound `pending` rows become `queued_for_send`: that UPDATE is what Realtime delivers.
CREATE OR REPLACE FUNCTION notify_send_sms()
RETURNS TRIGGER AS $$
BEGIN
  IF NEW.direction = 'outbound' AND NEW.status = 'pending' THEN
    UPDATE messages
    SET status = 'queued_for_send'
    WHERE id = NEW.id;
  END IF;
  RETURN NEW;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS on_message_send ON messages;
CREATE TRIGGER on_message_send
  AFTER INSERT ON messages
  FOR EACH ROW
  EXECUTE FUNCTION notify_send_sms();

-- Realtime only sees tables in the `supabase_realtime` publication (absent outside Supabase).
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime')
     AND NOT EXISTS (SELECT 1 FROM pg_publication_tables
                     WHERE pubname = 'supabase_realtime' AND schemaname = 'public'
                       AND tablename = 'messages') THEN
    ALTER PUBLICATION supabase_realtime ADD TABLE messages;
  END IF;
END $$;
