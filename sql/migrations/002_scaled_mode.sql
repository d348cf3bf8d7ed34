-- Optional: scaled mode for sms-sender (contract: docs/scaled-mode.md).
--
-- What it changes in the database:
--   * adds four functions in `public`:
--       sms_sender_scaled_mode()      -> json  {"partitions": 16}; the service calls it at start
--                                        (POST /rest/v1/rpc/sms_sender_scaled_mode) and runs in
--                                        scaled mode when it exists;
--       sms_sender_partition(id uuid) -> int   the row's partition, 0..15, from the id's last byte;
--       sms_sender_wake()             -> trigger function (below);
--       sms_sender_claim(partitions int[], max_rows int, stamp timestamptz)
--                                     -> the batch claim (queued_for_send -> sending);
--   * adds the trigger `sms_sender_wake` on `messages`: every time an outbound row ENTERS
--     `queued_for_send` (inserted so, moved there by the `on_message_send` trigger, requeued by
--     the app, given back by the service) it calls
--     realtime.send({"id": <row id>}, 'queued', 'sms-sender:p<partition>', true), a private
--     Broadcast to the row's partition topic. An UPDATE that leaves a row in `queued_for_send`
--     (its content edited, say) sends nothing.
--   Nothing else changes: no table, column or row is touched, and the `supabase_realtime`
--   publication (Postgres Changes) is left as it is.
--
-- When to install it: when several instances share the work (without it every instance
-- receives every change and races for every row). It needs Supabase Realtime's
-- `realtime.send` (every Supabase project has it; the migration stops with an error, having
-- changed nothing, on a database without it). Run it after sql/schema.sql, in the SQL editor or
-- with psql; running it again is harmless. Restart the instances afterwards: each one checks for
-- scaled mode when it starts. To go back to the default mode, drop the trigger and the four
-- functions, then restart the instances:
--   DROP TRIGGER IF EXISTS sms_sender_wake ON public.messages;
--   DROP FUNCTION IF EXISTS public.sms_sender_wake(), public.sms_sender_claim(int[], int, timestamptz),
--     public.sms_sender_partition(uuid), public.sms_sender_scaled_mode();

BEGIN;

-- Checked first, so a database without Realtime's Broadcast is left untouched: otherwise the
-- trigger would be installed and the first queued row would fail the INSERT that queued it.
DO $check$
DECLARE
  send regprocedure := to_regprocedure('realtime.send(jsonb, text, text, boolean)');
BEGIN
  IF send IS NULL THEN
    RAISE EXCEPTION 'sms-sender scaled mode needs Supabase Realtime''s realtime.send(jsonb, text, text, boolean), which this database does not have'
      USING HINT = 'Install this migration on a Supabase project; without it sms-sender runs in the default mode.';
  END IF;
  IF NOT has_function_privilege(send, 'EXECUTE') THEN
    RAISE EXCEPTION 'sms-sender scaled mode: role % may not execute realtime.send', current_user
      USING HINT = 'Run this migration as the project''s postgres role (the SQL editor does).';
  END IF;
END
$check$;

-- Names in the bodies below resolve now, against the system catalog only (every other name is
-- written with its schema), whatever the session's search_path.
SET LOCAL search_path = pg_catalog, pg_temp;

-- The declaration the service reads. The partition count is written here and only here: every
-- other object reads it from this function.
CREATE OR REPLACE FUNCTION public.sms_sender_scaled_mode()
RETURNS json
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN '{"partitions": 16}'::json;

-- A row's partition: its id's last byte modulo the partition count. Stable for the row's life
-- and uniform over random (v4) UUIDs, whose last byte is random; NULL for NULL. SQL-standard
-- bodies are bound when created (immune to the caller's search_path); this one is inlined into
-- the queries that use it, down to `get_byte(uuid_send(id), 15) % 16` (STRICT would prevent it).
CREATE OR REPLACE FUNCTION public.sms_sender_partition(id uuid)
RETURNS int
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN get_byte(uuid_send(id), 15) % (public.sms_sender_scaled_mode() ->> 'partitions')::int;

-- The wake-up. SECURITY DEFINER (owned by the role installing it), as Supabase's guide to
-- broadcasting from the database does: rows are written by many roles (the app's, the service's),
-- and realtime.send inserts into realtime.messages with its caller's rights, under RLS.
CREATE OR REPLACE FUNCTION public.sms_sender_wake()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- The trigger's WHEN clause admits rows that are queued and outbound; an UPDATE wakes only
  -- when it moved the row into `queued_for_send`, so each entry wakes exactly once.
  IF TG_OP = 'UPDATE' THEN
    IF OLD.status IS NOT DISTINCT FROM NEW.status THEN
      RETURN NULL;
    END IF;
  END IF;
  PERFORM realtime.send(
    jsonb_build_object('id', NEW.id),
    'queued',
    'sms-sender:p' || public.sms_sender_partition(NEW.id),
    true
  );
  RETURN NULL;
END;
$$;

REVOKE ALL ON FUNCTION public.sms_sender_wake() FROM PUBLIC;

DROP TRIGGER IF EXISTS sms_sender_wake ON public.messages;
CREATE TRIGGER sms_sender_wake
  AFTER INSERT OR UPDATE OF status ON public.messages
  FOR EACH ROW
  WHEN (NEW.status = 'queued_for_send' AND NEW.direction = 'outbound')
  EXECUTE FUNCTION public.sms_sender_wake();

-- The batch claim: the single claim (sms-sender's PATCH `status=eq.queued_for_send&
-- direction=eq.outbound&content=not.like.<1601 characters>*` setting status and sent_at) for up
-- to `max_rows` rows at once, oldest first. Rows another transaction holds are skipped, not
-- waited for, so concurrent claims never return the same row. A body over 1,600 characters is
-- never claimed (the service fails those rows without reading them); `twilio_message_sid` is
-- returned untouched (a requeued row's previous attempt). SECURITY INVOKER: the caller's
-- rights and RLS apply, as for the single claim.
CREATE OR REPLACE FUNCTION public.sms_sender_claim(partitions int[], max_rows int, stamp timestamptz)
RETURNS TABLE (id uuid, content text, twilio_message_sid text, conversation json)
LANGUAGE plpgsql
VOLATILE
SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  -- A bad bound is refused, never taken as "no limit".
  IF sms_sender_claim.max_rows IS NULL
     OR sms_sender_claim.max_rows NOT BETWEEN 1 AND 1000 THEN
    RAISE EXCEPTION 'sms_sender_claim: max_rows must be between 1 and 1000, not %',
      coalesce(sms_sender_claim.max_rows::text, 'null')
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  -- Every later write of the claim is fenced on this stamp: a claim without one is refused.
  IF sms_sender_claim.stamp IS NULL THEN
    RAISE EXCEPTION 'sms_sender_claim: stamp must not be null'
      USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY
  WITH picked AS (
    SELECT m.id
    FROM public.messages m
    WHERE m.status = 'queued_for_send'
      AND m.direction = 'outbound'
      AND char_length(m.content) <= 1600
      AND (sms_sender_claim.partitions IS NULL
           OR cardinality(sms_sender_claim.partitions) = 0
           OR public.sms_sender_partition(m.id) = ANY (sms_sender_claim.partitions))
    ORDER BY m.created_at, m.id
    LIMIT sms_sender_claim.max_rows
    FOR UPDATE OF m SKIP LOCKED
  ), claimed AS (
    UPDATE public.messages m
    SET status = 'sending', sent_at = sms_sender_claim.stamp
    FROM picked
    WHERE m.id = picked.id
    RETURNING m.id, m.content, m.twilio_message_sid, m.conversation_id, m.created_at
  )
  SELECT c.id,
         c.content::text,
         c.twilio_message_sid::text,
         CASE WHEN conv.id IS NULL THEN NULL
              ELSE json_build_object('phone_number', conv.phone_number) END
  FROM claimed c
  LEFT JOIN public.conversations conv ON conv.id = c.conversation_id
  ORDER BY c.created_at, c.id;
END;
$$;

-- Only the service (Supabase's service_role) claims; the app's roles may not call the claim.
REVOKE ALL ON FUNCTION public.sms_sender_claim(int[], int, timestamptz) FROM PUBLIC;
DO $grants$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    REVOKE ALL ON FUNCTION public.sms_sender_claim(int[], int, timestamptz) FROM anon;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    REVOKE ALL ON FUNCTION public.sms_sender_claim(int[], int, timestamptz) FROM authenticated;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    GRANT EXECUTE ON FUNCTION public.sms_sender_claim(int[], int, timestamptz) TO service_role;
  END IF;
END
$grants$;

-- PostgREST finds new functions once its schema cache is reloaded (Supabase reloads it after
-- DDL by itself; a plain PostgREST listens for this, and it is delivered at COMMIT).
NOTIFY pgrst, 'reload schema';

COMMIT;
