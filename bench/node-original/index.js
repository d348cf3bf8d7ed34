// A re-creation of the original Node sms-sender, used by sms-bench as a CPU peer only.
// See README.md in this folder for what it is, what it is not, and the two changes needed to run
// it against the local doubles (the Twilio base URL and the WebSocket transport on Node 20).
'use strict';

const http = require('http');
const { createClient } = require('@supabase/supabase-js');
const twilio = require('twilio');
const ws = require('ws');

const SUPABASE_URL = required('SUPABASE_URL');
const SUPABASE_SERVICE_KEY = required('SUPABASE_SERVICE_KEY');
const TWILIO_ACCOUNT_SID = required('TWILIO_ACCOUNT_SID');
const TWILIO_AUTH_TOKEN = required('TWILIO_AUTH_TOKEN');
const TWILIO_PHONE_NUMBER = required('TWILIO_PHONE_NUMBER');
const PORT = parseInt(process.env.PORT || '8080', 10);
// Not in the original: where the Twilio API is (the double in the bench). Unset: Twilio itself.
const TWILIO_API_URL = process.env.TWILIO_API_URL || '';

// Retries after the first attempt, waiting 1 s, 2 s, then 4 s.
const MAX_RETRIES = 3;

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`Missing required environment variable ${name}`);
    process.exit(1);
  }
  return value;
}

// supabase-js ≥ 2.5x refuses to pick a WebSocket on Node < 22 by itself and asks for the `ws`
// package as the transport; that is the only realtime option given.
const supabase = createClient(SUPABASE_URL, SUPABASE_SERVICE_KEY, {
  auth: { persistSession: false, autoRefreshToken: false },
  realtime: { transport: ws },
});

// The official SDK, sending to TWILIO_API_URL instead of https://api.twilio.com when it is set:
// its own request client, with only the scheme, host and port of each request URL replaced.
class RedirectingRequestClient extends twilio.RequestClient {
  request(opts) {
    if (TWILIO_API_URL && opts && opts.uri) {
      const target = new URL(TWILIO_API_URL);
      const uri = new URL(opts.uri);
      uri.protocol = target.protocol;
      uri.host = target.host;
      opts = { ...opts, uri: uri.href };
    }
    return super.request(opts);
  }
}
const twilioClient = twilio(TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, {
  httpClient: TWILIO_API_URL ? new RedirectingRequestClient() : undefined,
});

let websocketStatus = 'disconnected';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function sendMessage(message, retry = 0) {
  try {
    const { data: conversation, error: convError } = await supabase
      .from('conversations')
      .select('phone_number')
      .eq('id', message.conversation_id)
      .single();
    if (convError || !conversation) {
      throw new Error(`conversation lookup failed: ${convError ? convError.message : 'not found'}`);
    }

    const sms = await twilioClient.messages.create({
      body: message.content,
      from: TWILIO_PHONE_NUMBER,
      to: conversation.phone_number,
    });

    const { error: updateError } = await supabase
      .from('messages')
      .update({ status: 'sent', twilio_message_sid: sms.sid, sent_at: new Date().toISOString() })
      .eq('id', message.id);
    if (updateError) {
      throw new Error(`status update failed: ${updateError.message}`);
    }
    console.log(`SMS sent for message ${message.id} (${sms.sid})`);
  } catch (err) {
    console.error(`Error sending message ${message.id} (retry ${retry}/${MAX_RETRIES}): ${err.message}`);
    if (retry < MAX_RETRIES) {
      // Exponential backoff: 1 s, 2 s, 4 s.
      await sleep(1000 * 2 ** retry);
      return sendMessage(message, retry + 1);
    }
    await supabase.from('messages').update({ status: 'failed' }).eq('id', message.id);
    console.error(`Message ${message.id} marked failed after ${MAX_RETRIES} retries`);
  }
}

const channel = supabase
  .channel('sms-sender')
  .on(
    'postgres_changes',
    { event: 'UPDATE', schema: 'public', table: 'messages', filter: 'status=eq.queued_for_send' },
    (payload) => {
      const message = payload.new;
      console.log(`Message ${message.id} queued for send`);
      sendMessage(message);
    },
  )
  .subscribe((status, err) => {
    console.log(`Realtime subscription status: ${status}${err ? ` (${err.message})` : ''}`);
    websocketStatus = status === 'SUBSCRIBED' ? 'connected' : 'disconnected';
  });

const server = http.createServer((req, res) => {
  if (req.url === '/health') {
    const body = JSON.stringify({
      status: 'healthy',
      service: 'sms-sender',
      timestamp: new Date().toISOString(),
      websocket: websocketStatus,
    });
    // With a length rather than chunked, so the bench's minimal HTTP client can read it.
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
    res.end(body);
    return;
  }
  res.writeHead(404);
  res.end();
});
server.listen(PORT, () => console.log(`Health server listening on port ${PORT}`));

function shutdown(signal) {
  console.log(`${signal} received, shutting down`);
  server.close();
  supabase
    .removeChannel(channel)
    .catch(() => {})
    .finally(() => process.exit(0));
  setTimeout(() => process.exit(0), 5000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
