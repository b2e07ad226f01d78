-- =============================================================================
-- ai-chat: websocket-handler's rooms on Realtime broadcast.
-- =============================================================================
--
-- Each conversation is a room; its live messages and typing indicators are
-- broadcast on the private channel `ai-room:<conversation id>`, so every isolate
-- holding a socket of that room sees what the others post. websocket-handler
-- joins the channel with the user's own token: only the conversation's owner
-- may read it (this policy). Nobody but the service role writes it (no insert
-- policy): messages are stored first (ai_room_post, with their sequence number)
-- and broadcast by the function, so a socket that missed a broadcast fills the
-- gap from ai_room_events.
-- =============================================================================

create policy ai_room_owner_read on realtime.messages for select to authenticated
  using (
    extension = 'broadcast'
    and realtime.topic() like 'ai-room:%'
    and exists (
      select 1 from public.conversations c
       where c.id::text = substr(realtime.topic(), 9) and c.user_id = (select auth.uid())));
