-- Supabase Realtime's objects in a project database, as its tenant migrations leave them
-- (supabase/realtime, lib/realtime/tenants/repo/migrations/): the table `realtime.messages`
-- that Broadcast from the database reads, `realtime.topic()`, and `realtime.send(…)` as
-- redefined by 20260605120000_rename_broadcast_send_warning. Idempotent.
-- Differences from a hosted project: the table is not partitioned by `inserted_at` (the real
-- one gets daily partitions from Realtime's janitor), and the grants to the anon,
-- authenticated and service_role roles are omitted (those roles do not exist here).

CREATE SCHEMA IF NOT EXISTS realtime;

CREATE TABLE IF NOT EXISTS realtime.messages (
  topic text NOT NULL,
  extension text NOT NULL,
  payload jsonb,
  event text,
  private boolean DEFAULT false,
  updated_at timestamp NOT NULL DEFAULT now(),
  inserted_at timestamp NOT NULL DEFAULT now(),
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  binary_payload bytea,
  PRIMARY KEY (id, inserted_at)
);

DO $do$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_constraint
                  WHERE conname = 'messages_payload_exclusive'
                    AND conrelid = 'realtime.messages'::regclass) THEN
    ALTER TABLE realtime.messages
      ADD CONSTRAINT messages_payload_exclusive
      CHECK (payload IS NULL OR binary_payload IS NULL) NOT VALID;
  END IF;
END
$do$;

CREATE INDEX IF NOT EXISTS messages_topic_index ON realtime.messages (topic);

ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;

CREATE OR REPLACE FUNCTION realtime.topic() RETURNS text AS $$
select nullif(current_setting('realtime.topic', true), '')::text;
$$ LANGUAGE sql STABLE;

CREATE OR REPLACE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true ) RETURNS void
AS $$
DECLARE
  generated_id uuid;
  final_payload jsonb;
BEGIN
  BEGIN
    generated_id := gen_random_uuid();

    -- Check if payload has an 'id' key, if not, add the generated UUID
    IF payload ? 'id' THEN
      final_payload := payload;
    ELSE
      final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
    END IF;

    -- Set the topic configuration
    EXECUTE format('SET LOCAL realtime.topic TO %L', topic);

    INSERT INTO realtime.messages (id, payload, event, topic, private, extension)
    VALUES (generated_id, final_payload, event, topic, private, 'broadcast');
  EXCEPTION
    WHEN OTHERS THEN
      RAISE WARNING 'WarnSendingBroadcastMessage: %', SQLERRM;
  END;
END;
$$
LANGUAGE plpgsql;
