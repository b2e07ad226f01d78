-- =============================================================================
-- ai-chat: the service role gets only the rights its functions use.
-- =============================================================================
--
-- Default privileges still give service_role every right on new tables in
-- public; chat-completion, websocket-handler and file-upload only select,
-- insert, update and delete (20261201001500 grants exactly that). TRUNCATE,
-- REFERENCES and TRIGGER are taken back so a leaked service key cannot wipe a
-- ledger in one statement that no row-level trigger or RLS would see.
-- =============================================================================

revoke truncate, references, trigger on
  public.profiles, public.conversations, public.messages, public.file_uploads, public.visualizations,
  public.user_sessions, public.api_usage, public.ai_model_prices, public.ai_budgets, public.ai_user_api_keys,
  public.ai_streams, public.ai_stream_events, public.ai_room_events
  from service_role;
