-- =============================================================================
-- ai-chat (seed 002): conversations with four providers, budgets, stop/resume.
-- =============================================================================
--
-- Tables (seed names where clients expect them, `ai_` for the rest):
--   profiles, conversations, messages, file_uploads, visualizations,
--   user_sessions, api_usage                                 (seed 002's names)
--   ai_model_prices      price per model, read by the reservation and settlement
--   ai_budgets           per-user spend limit, spent and reserved (the ledger's sums)
--   ai_user_api_keys     users' own provider keys, AES-GCM ciphertext (never readable
--                        by the API roles: column grants omit nonce and ciphertext)
--   ai_streams           one per streamed answer: status, stop flag, heartbeat
--   ai_stream_events     the SSE events of a stream, replayed after Last-Event-ID
--   ai_room_events       websocket room messages with a per-conversation sequence
-- (code_executions belongs to the code-execution system, migration 20261201001600.)
--
-- A user reaches only their own rows (RLS). Everything that spends money or writes
-- an answer goes through one service-only SQL call, so two isolates can never both
-- pass a budget check that only one of them fits:
--   ai_chat_begin(...)  -> jsonb   reserve the worst case, create the rows   [service_role]
--   ai_stream_append(...) -> jsonb save streamed events + partial answer      [service_role]
--   ai_chat_finish(...) -> jsonb   settle from usage (or the reservation)     [service_role]
--   ai_chat_stop(p_user, p_stream) -> jsonb   ask a stream's producer to stop [service_role]
--   ai_stream_read(p_user, p_stream, p_after) -> jsonb  events after a seq    [service_role]
--   ai_room_post / ai_room_read / ai_session_* (websocket-handler)            [service_role]
--
-- Cost rules (written down in systems/ai-chat/src/budget.rs too):
--   reservation = max over the candidate models of
--                 (prompt_tokens * input_price + max_tokens * output_price) / 1e6
--   settlement  = the provider's reported usage at the answering model's price;
--                 no usage but an answer (stopped, cut, or a provider that sent none):
--                 the reservation, never zero; the provider refused before answering: 0.
-- Errors: EC402 budget_exceeded, EC404 conversation_not_found / stream_not_found,
--         EC422 model_not_priced.
-- =============================================================================

-- -----------------------------------------------------------------------------
-- Tables from seed 002
-- -----------------------------------------------------------------------------

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived; each API function is granted explicitly below.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create table public.profiles (
  id uuid primary key references auth.users (id) on delete cascade,
  display_name text check (display_name is null or length(display_name) <= 100),
  avatar_url text check (avatar_url is null or length(avatar_url) <= 2048),
  preferences jsonb not null default '{}'::jsonb
    check (jsonb_typeof(preferences) = 'object' and length(preferences::text) <= 16384),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table public.profiles enable row level security;
create policy profiles_owner_read on public.profiles for select to authenticated
  using (id = (select auth.uid()));
create policy profiles_owner_create on public.profiles for insert to authenticated
  with check (id = (select auth.uid()));
create policy profiles_owner_update on public.profiles for update to authenticated
  using (id = (select auth.uid())) with check (id = (select auth.uid()));
grant select, insert (id, display_name, avatar_url, preferences),
  update (display_name, avatar_url, preferences) on public.profiles to authenticated;
grant select, insert, update, delete on public.profiles to service_role;

create table public.conversations (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  title text not null default 'New conversation' check (length(title) between 1 and 200),
  model text check (model is null or length(model) <= 100),
  provider text check (provider is null or provider in ('openai', 'anthropic', 'mistral', 'gemini')),
  -- The websocket room's last sequence number (ai_room_post takes the row lock).
  room_seq bigint not null default 0,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index conversations_user_idx on public.conversations (user_id, updated_at desc);
alter table public.conversations enable row level security;
create policy conversations_owner_read on public.conversations for select to authenticated
  using (user_id = (select auth.uid()));
create policy conversations_owner_create on public.conversations for insert to authenticated
  with check (user_id = (select auth.uid()));
create policy conversations_owner_update on public.conversations for update to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy conversations_owner_delete on public.conversations for delete to authenticated
  using (user_id = (select auth.uid()));
grant select, insert (title, model, provider), update (title, model, provider), delete
  on public.conversations to authenticated;
grant select, insert, update, delete on public.conversations to service_role;

create table public.messages (
  id uuid primary key default gen_random_uuid(),
  conversation_id uuid not null references public.conversations (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  role text not null check (role in ('system', 'user', 'assistant')),
  content text not null default '' check (length(content) <= 400000),
  -- streaming: being written; stopped: the user stopped it (partial answer kept);
  -- failed: the provider failed (partial answer kept, never spliced with another's).
  status text not null default 'complete' check (status in ('complete', 'streaming', 'stopped', 'failed')),
  provider text,
  model text,
  prompt_tokens integer,
  completion_tokens integer,
  cost_usd numeric(20, 10),
  error jsonb,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index messages_conversation_idx on public.messages (conversation_id, created_at);
create index messages_user_idx on public.messages (user_id);
alter table public.messages enable row level security;
create policy messages_owner_read on public.messages for select to authenticated
  using (user_id = (select auth.uid()));
-- Written only by chat-completion (service role): an answer and its cost belong together.
grant select on public.messages to authenticated;
grant select, insert, update, delete on public.messages to service_role;

create table public.file_uploads (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  conversation_id uuid references public.conversations (id) on delete set null,
  bucket text not null default 'chat-files' check (bucket = 'chat-files'),
  object_path text not null unique check (length(object_path) between 1 and 1024),
  file_name text not null check (length(file_name) between 1 and 255),
  mime_type text not null check (length(mime_type) between 1 and 255),
  size_bytes bigint not null check (size_bytes between 1 and 10485760),
  -- pending: a signed upload URL was handed out; uploaded: the bytes were checked.
  status text not null default 'pending' check (status in ('pending', 'uploaded', 'rejected')),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
create index file_uploads_user_idx on public.file_uploads (user_id, created_at desc);
alter table public.file_uploads enable row level security;
create policy file_uploads_owner_read on public.file_uploads for select to authenticated
  using (user_id = (select auth.uid()));
create policy file_uploads_owner_delete on public.file_uploads for delete to authenticated
  using (user_id = (select auth.uid()));
grant select, delete on public.file_uploads to authenticated;
grant select, insert, update, delete on public.file_uploads to service_role;

create table public.visualizations (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null default auth.uid() references auth.users (id) on delete cascade,
  conversation_id uuid references public.conversations (id) on delete cascade,
  message_id uuid references public.messages (id) on delete cascade,
  kind text not null check (kind in ('chart', 'table', 'graph', 'map', 'other')),
  title text check (title is null or length(title) <= 200),
  config jsonb not null default '{}'::jsonb
    check (jsonb_typeof(config) = 'object' and length(config::text) <= 65536),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);
alter table public.visualizations enable row level security;
create policy visualizations_owner_read on public.visualizations for select to authenticated
  using (user_id = (select auth.uid()));
-- A visualization may only point at the caller's own conversation and message.
create policy visualizations_owner_create on public.visualizations for insert to authenticated
  with check (
    user_id = (select auth.uid())
    and (conversation_id is null or exists (
      select 1 from public.conversations c where c.id = conversation_id and c.user_id = (select auth.uid())))
    and (message_id is null or exists (
      select 1 from public.messages m where m.id = message_id and m.user_id = (select auth.uid()))));
create policy visualizations_owner_update on public.visualizations for update to authenticated
  using (user_id = (select auth.uid())) with check (user_id = (select auth.uid()));
create policy visualizations_owner_delete on public.visualizations for delete to authenticated
  using (user_id = (select auth.uid()));
grant select, insert (conversation_id, message_id, kind, title, config), update (kind, title, config), delete
  on public.visualizations to authenticated;
grant select, insert, update, delete on public.visualizations to service_role;

create table public.user_sessions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  conversation_id uuid not null references public.conversations (id) on delete cascade,
  -- sha256 of the session token a reconnecting client presents (never the token).
  token_hash text not null unique,
  status text not null default 'connected' check (status in ('connected', 'disconnected')),
  -- The last room sequence number delivered on this session.
  last_seq bigint not null default 0,
  last_seen_at timestamptz not null default now(),
  created_at timestamptz not null default now()
);
create index user_sessions_room_idx on public.user_sessions (conversation_id, status);
alter table public.user_sessions enable row level security;
create policy user_sessions_owner_read on public.user_sessions for select to authenticated
  using (user_id = (select auth.uid()));
grant select (id, user_id, conversation_id, status, last_seq, last_seen_at, created_at)
  on public.user_sessions to authenticated;
grant select, insert, update, delete on public.user_sessions to service_role;

create table public.api_usage (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  conversation_id uuid references public.conversations (id) on delete set null,
  message_id uuid unique references public.messages (id) on delete set null,
  provider text,
  model text,
  prompt_tokens integer,
  completion_tokens integer,
  reserved_usd numeric(20, 10) not null check (reserved_usd >= 0),
  cost_usd numeric(20, 10) check (cost_usd >= 0),
  -- provider: from the provider's usage; reservation: no usage came, the worst case
  -- was charged; none: the provider refused before answering.
  usage_source text check (usage_source in ('provider', 'reservation', 'none')),
  status text not null default 'reserved' check (status in ('reserved', 'settled')),
  created_at timestamptz not null default now(),
  settled_at timestamptz
);
create index api_usage_user_idx on public.api_usage (user_id, created_at desc);
create index api_usage_open_idx on public.api_usage (created_at) where status = 'reserved';
alter table public.api_usage enable row level security;
create policy api_usage_owner_read on public.api_usage for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.api_usage to authenticated;
grant select, insert, update, delete on public.api_usage to service_role;

-- -----------------------------------------------------------------------------
-- Prices, budgets, keys, stream log, room log
-- -----------------------------------------------------------------------------

create table public.ai_model_prices (
  provider text not null check (provider in ('openai', 'anthropic', 'mistral', 'gemini')),
  model text not null check (length(model) between 1 and 100),
  input_usd_per_mtok numeric(12, 6) not null check (input_usd_per_mtok >= 0),
  output_usd_per_mtok numeric(12, 6) not null check (output_usd_per_mtok >= 0),
  max_output_tokens integer not null default 4096 check (max_output_tokens between 1 and 1000000),
  primary key (provider, model)
);
alter table public.ai_model_prices enable row level security;
create policy ai_model_prices_readable on public.ai_model_prices for select to authenticated using (true);
grant select on public.ai_model_prices to authenticated;
grant select, insert, update, delete on public.ai_model_prices to service_role;

-- USD per million tokens, from each provider's published price list.
insert into public.ai_model_prices (provider, model, input_usd_per_mtok, output_usd_per_mtok, max_output_tokens) values
  ('openai', 'gpt-4o-mini', 0.15, 0.60, 16384),
  ('openai', 'gpt-4o', 2.50, 10.00, 16384),
  ('openai', 'gpt-4', 30.00, 60.00, 8192),
  ('openai', 'gpt-3.5-turbo', 0.50, 1.50, 4096),
  ('anthropic', 'claude-3-5-sonnet-latest', 3.00, 15.00, 8192),
  ('anthropic', 'claude-3-5-haiku-latest', 0.80, 4.00, 8192),
  ('anthropic', 'claude-3-haiku-20240307', 0.25, 1.25, 4096),
  ('mistral', 'mistral-small-latest', 0.20, 0.60, 8192),
  ('mistral', 'mistral-large-latest', 2.00, 6.00, 8192),
  ('gemini', 'gemini-2.0-flash', 0.10, 0.40, 8192),
  ('gemini', 'gemini-1.5-pro', 1.25, 5.00, 8192);

create table public.ai_budgets (
  user_id uuid primary key references auth.users (id) on delete cascade,
  spend_limit_usd numeric(20, 10) not null check (spend_limit_usd >= 0),
  spent_usd numeric(20, 10) not null default 0 check (spent_usd >= 0),
  reserved_usd numeric(20, 10) not null default 0 check (reserved_usd >= 0),
  updated_at timestamptz not null default now()
);
alter table public.ai_budgets enable row level security;
create policy ai_budgets_owner_read on public.ai_budgets for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.ai_budgets to authenticated;
grant select, insert, update, delete on public.ai_budgets to service_role;

create table public.ai_user_api_keys (
  user_id uuid not null references auth.users (id) on delete cascade,
  provider text not null check (provider in ('openai', 'anthropic', 'mistral', 'gemini')),
  -- Which encryption key sealed it (AI_KEY_ENCRYPTION_KEYS), so keys can rotate.
  key_id text not null check (key_id ~ '^[A-Za-z0-9_-]{1,32}$'),
  nonce text not null,
  ciphertext text not null check (length(ciphertext) <= 4096),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (user_id, provider)
);
alter table public.ai_user_api_keys enable row level security;
create policy ai_user_api_keys_owner_read on public.ai_user_api_keys for select to authenticated
  using (user_id = (select auth.uid()));
create policy ai_user_api_keys_owner_delete on public.ai_user_api_keys for delete to authenticated
  using (user_id = (select auth.uid()));
-- Which providers have a key, never the sealed key itself.
grant select (user_id, provider, key_id, created_at, updated_at), delete on public.ai_user_api_keys to authenticated;
grant select, insert, update, delete on public.ai_user_api_keys to service_role;

create table public.ai_streams (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  message_id uuid not null unique references public.messages (id) on delete cascade,
  status text not null default 'streaming' check (status in ('streaming', 'completed', 'stopped', 'failed')),
  stop_requested boolean not null default false,
  last_seq integer not null default 0,
  heartbeat_at timestamptz not null default now(),
  created_at timestamptz not null default now()
);
create index ai_streams_open_idx on public.ai_streams (user_id) where status = 'streaming';
alter table public.ai_streams enable row level security;
create policy ai_streams_owner_read on public.ai_streams for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.ai_streams to authenticated;
grant select, insert, update, delete on public.ai_streams to service_role;

create table public.ai_stream_events (
  stream_id uuid not null references public.ai_streams (id) on delete cascade,
  seq integer not null check (seq >= 1),
  user_id uuid not null,
  event text not null check (length(event) between 1 and 32),
  data text not null check (length(data) <= 65536),
  created_at timestamptz not null default now(),
  primary key (stream_id, seq)
);
alter table public.ai_stream_events enable row level security;
create policy ai_stream_events_owner_read on public.ai_stream_events for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.ai_stream_events to authenticated;
grant select, insert, update, delete on public.ai_stream_events to service_role;

create table public.ai_room_events (
  conversation_id uuid not null references public.conversations (id) on delete cascade,
  seq bigint not null check (seq >= 1),
  user_id uuid not null,
  kind text not null check (kind in ('message', 'system')),
  payload jsonb not null check (length(payload::text) <= 16384),
  created_at timestamptz not null default now(),
  primary key (conversation_id, seq)
);
alter table public.ai_room_events enable row level security;
create policy ai_room_events_owner_read on public.ai_room_events for select to authenticated
  using (user_id = (select auth.uid()));
grant select on public.ai_room_events to authenticated;
grant select, insert, update, delete on public.ai_room_events to service_role;

alter publication supabase_realtime add table public.messages, public.conversations, public.ai_streams;

-- -----------------------------------------------------------------------------
-- Private helpers
-- -----------------------------------------------------------------------------

-- Cost of a call in USD at a model's price; NULL when the model has no price.
create function private.ai_cost(p_provider text, p_model text, p_prompt integer, p_completion integer)
returns numeric
language sql stable security definer set search_path = ''
as $$
  select (p_prompt::numeric * p.input_usd_per_mtok + p_completion::numeric * p.output_usd_per_mtok) / 1000000
    from public.ai_model_prices p where p.provider = p_provider and p.model = p_model
$$;

-- Settles one open reservation. Idempotent: a settled row is returned as it is.
create function private.ai_settle(
  p_message uuid, p_status text, p_content text, p_provider text, p_model text,
  p_prompt_tokens integer, p_completion_tokens integer, p_error jsonb
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_usage public.api_usage;
  v_cost numeric;
  v_source text;
begin
  select * into v_usage from public.api_usage where message_id = p_message for update;
  if not found then
    raise exception using errcode = 'EC404', message = 'message_not_found';
  end if;
  if v_usage.status = 'settled' then
    return jsonb_build_object('cost_usd', v_usage.cost_usd::text, 'usage_source', v_usage.usage_source,
                              'already_settled', true);
  end if;
  if p_prompt_tokens is not null and p_completion_tokens is not null then
    v_cost := private.ai_cost(p_provider, p_model, p_prompt_tokens, p_completion_tokens);
    v_source := 'provider';
  end if;
  if v_cost is null then
    -- Nothing was generated and the provider refused: nothing to pay. Anything else
    -- without usage (stopped, cut off, a stream that never reported it) is charged
    -- the worst case it reserved, never zero.
    if p_status = 'failed' and coalesce(p_content, '') = '' then
      v_cost := 0;
      v_source := 'none';
    else
      v_cost := v_usage.reserved_usd;
      v_source := 'reservation';
    end if;
  end if;
  update public.ai_budgets
     set reserved_usd = greatest(reserved_usd - v_usage.reserved_usd, 0),
         spent_usd = spent_usd + v_cost,
         updated_at = now()
   where user_id = v_usage.user_id;
  update public.api_usage
     set status = 'settled', cost_usd = v_cost, usage_source = v_source,
         provider = coalesce(p_provider, provider), model = coalesce(p_model, model),
         prompt_tokens = p_prompt_tokens, completion_tokens = p_completion_tokens, settled_at = now()
   where id = v_usage.id;
  update public.messages
     set status = case when p_status = 'completed' then 'complete' else p_status end,
         content = coalesce(p_content, content),
         provider = coalesce(p_provider, provider), model = coalesce(p_model, model),
         prompt_tokens = p_prompt_tokens, completion_tokens = p_completion_tokens,
         cost_usd = v_cost, error = p_error, updated_at = now()
   where id = p_message;
  update public.ai_streams set status = p_status, heartbeat_at = now() where message_id = p_message;
  return jsonb_build_object('cost_usd', v_cost::text, 'usage_source', v_source, 'already_settled', false);
end
$$;

-- Streams whose producer vanished (the isolate hit its wall clock mid-answer) are
-- settled at their reservation, so their money is never held forever.
create function private.ai_reap_stale(p_user uuid, p_stale_seconds integer) returns void
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_stream record;
begin
  for v_stream in
    select s.message_id, m.content from public.ai_streams s join public.messages m on m.id = s.message_id
     where s.user_id = p_user and s.status = 'streaming'
       and s.heartbeat_at < now() - make_interval(secs => p_stale_seconds)
     for update of s skip locked
  loop
    perform private.ai_settle(v_stream.message_id, 'failed', v_stream.content, null, null, null, null,
                              jsonb_build_object('code', 'stream_lost'));
  end loop;
end
$$;

-- -----------------------------------------------------------------------------
-- API (service role only; chat-completion and websocket-handler call them)
-- -----------------------------------------------------------------------------

-- Reserves the worst case of the candidates against the user's budget under the
-- budget row's lock, and creates the conversation (if new), the user's message, the
-- assistant's message, its api_usage row and (for streams) its ai_streams row.
-- p_candidates: [{"provider": "...", "model": "..."}, ...] in fallback order.
create function public.ai_chat_begin(
  p_user uuid,
  p_candidates jsonb,
  p_prompt_tokens integer,
  p_max_tokens integer,
  p_default_limit_usd numeric,
  p_stream boolean,
  p_user_message text default null,
  p_conversation uuid default null,
  p_title text default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_conversation uuid;
  v_reserve numeric := 0;
  v_cost numeric;
  v_candidate jsonb;
  v_budget public.ai_budgets;
  v_user_message uuid;
  v_message uuid;
  v_stream uuid;
  v_first jsonb;
begin
  if p_user is null or p_prompt_tokens is null or p_prompt_tokens < 0 or p_max_tokens is null
     or p_max_tokens not between 1 and 1000000 or p_default_limit_usd is null or p_default_limit_usd < 0
     or p_stream is null then
    raise exception using errcode = '22023', message = 'invalid arguments';
  end if;
  if jsonb_typeof(p_candidates) is distinct from 'array' or jsonb_array_length(p_candidates) not between 1 and 8 then
    raise exception using errcode = '22023', message = 'p_candidates must be an array of 1 to 8 models';
  end if;
  for v_candidate in select * from jsonb_array_elements(p_candidates) loop
    v_cost := private.ai_cost(v_candidate ->> 'provider', v_candidate ->> 'model', p_prompt_tokens, p_max_tokens);
    if v_cost is null then
      raise exception using errcode = 'EC422', message = 'model_not_priced',
        detail = coalesce(v_candidate ->> 'provider', '?') || '/' || coalesce(v_candidate ->> 'model', '?');
    end if;
    v_reserve := greatest(v_reserve, v_cost);
  end loop;
  v_first := p_candidates -> 0;

  perform private.ai_reap_stale(p_user, 600);

  insert into public.ai_budgets (user_id, spend_limit_usd) values (p_user, p_default_limit_usd)
    on conflict (user_id) do nothing;
  select * into v_budget from public.ai_budgets where user_id = p_user for update;
  if (v_budget.spent_usd + v_budget.reserved_usd + v_reserve <= v_budget.spend_limit_usd) is not true then
    raise exception using errcode = 'EC402', message = 'budget_exceeded',
      detail = json_build_object('limit_usd', v_budget.spend_limit_usd::text, 'spent_usd', v_budget.spent_usd::text,
                                 'reserved_usd', v_budget.reserved_usd::text, 'needed_usd', v_reserve::text)::text;
  end if;

  if p_conversation is null then
    insert into public.conversations (user_id, title, model, provider)
    values (p_user, coalesce(nullif(left(btrim(coalesce(p_title, '')), 200), ''), 'New conversation'),
            v_first ->> 'model', v_first ->> 'provider')
    returning id into v_conversation;
  else
    select id into v_conversation from public.conversations
     where id = p_conversation and user_id = p_user for update;
    if v_conversation is null then
      raise exception using errcode = 'EC404', message = 'conversation_not_found';
    end if;
    update public.conversations set updated_at = now() where id = v_conversation;
  end if;

  update public.ai_budgets set reserved_usd = reserved_usd + v_reserve, updated_at = now() where user_id = p_user;

  if p_user_message is not null then
    insert into public.messages (conversation_id, user_id, role, content)
    values (v_conversation, p_user, 'user', p_user_message) returning id into v_user_message;
  end if;
  insert into public.messages (conversation_id, user_id, role, content, status, provider, model)
  values (v_conversation, p_user, 'assistant', '', 'streaming', v_first ->> 'provider', v_first ->> 'model')
  returning id into v_message;
  insert into public.api_usage (user_id, conversation_id, message_id, provider, model, reserved_usd)
  values (p_user, v_conversation, v_message, v_first ->> 'provider', v_first ->> 'model', v_reserve);
  insert into public.ai_streams (user_id, message_id) values (p_user, v_message) returning id into v_stream;

  return jsonb_build_object(
    'conversation_id', v_conversation, 'user_message_id', v_user_message, 'message_id', v_message,
    'stream_id', v_stream, 'reserved_usd', v_reserve::text);
end
$$;
grant execute on function public.ai_chat_begin(uuid, jsonb, integer, integer, numeric, boolean, text, uuid, text)
  to service_role;

-- Saves a batch of streamed events and the answer so far; tells the producer
-- whether its owner asked it to stop. p_events: [{"seq", "event", "data"}, ...].
create function public.ai_stream_append(p_stream uuid, p_events jsonb, p_content text) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_stream public.ai_streams;
begin
  if jsonb_typeof(p_events) is distinct from 'array' then
    raise exception using errcode = '22023', message = 'p_events must be an array';
  end if;
  select * into v_stream from public.ai_streams where id = p_stream;
  if not found then
    raise exception using errcode = 'EC404', message = 'stream_not_found';
  end if;
  insert into public.ai_stream_events (stream_id, seq, user_id, event, data)
  select p_stream, (e ->> 'seq')::integer, v_stream.user_id, e ->> 'event', e ->> 'data'
    from jsonb_array_elements(p_events) e
  on conflict (stream_id, seq) do nothing;
  update public.ai_streams
     set last_seq = greatest(last_seq, coalesce((select max((e ->> 'seq')::integer) from jsonb_array_elements(p_events) e), 0)),
         heartbeat_at = now()
   where id = p_stream;
  if p_content is not null then
    update public.messages set content = p_content, updated_at = now()
     where id = v_stream.message_id and status = 'streaming';
  end if;
  return jsonb_build_object('stop_requested', v_stream.stop_requested, 'status', v_stream.status);
end
$$;
grant execute on function public.ai_stream_append(uuid, jsonb, text) to service_role;

-- Ends a call: the final events, the answer, and the settlement, in one transaction.
-- p_status: completed | stopped | failed.
create function public.ai_chat_finish(
  p_message uuid,
  p_status text,
  p_content text,
  p_events jsonb default '[]'::jsonb,
  p_provider text default null,
  p_model text default null,
  p_prompt_tokens integer default null,
  p_completion_tokens integer default null,
  p_error jsonb default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_stream uuid;
begin
  if p_status is null or p_status not in ('completed', 'stopped', 'failed') then
    raise exception using errcode = '22023', message = 'p_status must be completed, stopped or failed';
  end if;
  if (p_prompt_tokens < 0 or p_completion_tokens < 0) is true then
    raise exception using errcode = '22023', message = 'token counts cannot be negative';
  end if;
  select id into v_stream from public.ai_streams where message_id = p_message;
  if v_stream is not null and jsonb_typeof(p_events) = 'array' and jsonb_array_length(p_events) > 0 then
    perform public.ai_stream_append(v_stream, p_events, null);
  end if;
  return private.ai_settle(p_message, p_status, p_content, p_provider, p_model,
                           p_prompt_tokens, p_completion_tokens, p_error);
end
$$;
grant execute on function public.ai_chat_finish(uuid, text, text, jsonb, text, text, integer, integer, jsonb)
  to service_role;

-- Asks the producer of the caller's stream to stop (it sees the flag on its next save).
create function public.ai_chat_stop(p_user uuid, p_stream uuid) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_stream public.ai_streams;
begin
  update public.ai_streams set stop_requested = true
   where id = p_stream and user_id = p_user
  returning * into v_stream;
  if v_stream.id is null then
    raise exception using errcode = 'EC404', message = 'stream_not_found';
  end if;
  return jsonb_build_object('stream_id', v_stream.id, 'message_id', v_stream.message_id, 'status', v_stream.status);
end
$$;
grant execute on function public.ai_chat_stop(uuid, uuid) to service_role;

-- The caller's stream events after p_after, its status and how long ago its producer
-- last saved (a resuming reader gives up on a producer that went silent).
create function public.ai_stream_read(p_user uuid, p_stream uuid, p_after integer, p_limit integer default 500)
returns jsonb
language plpgsql stable security definer set search_path = ''
as $$
declare
  v_stream public.ai_streams;
begin
  select * into v_stream from public.ai_streams where id = p_stream and user_id = p_user;
  if not found then
    raise exception using errcode = 'EC404', message = 'stream_not_found';
  end if;
  return jsonb_build_object(
    'status', v_stream.status,
    'message_id', v_stream.message_id,
    'last_seq', v_stream.last_seq,
    'silent_ms', (extract(epoch from (clock_timestamp() - v_stream.heartbeat_at)) * 1000)::bigint,
    'events', coalesce((
      select jsonb_agg(jsonb_build_object('seq', e.seq, 'event', e.event, 'data', e.data) order by e.seq)
        from (select * from public.ai_stream_events
               where stream_id = p_stream and seq > greatest(coalesce(p_after, 0), 0)
               order by seq limit least(greatest(coalesce(p_limit, 500), 1), 1000)) e), '[]'::jsonb));
end
$$;
grant execute on function public.ai_stream_read(uuid, uuid, integer, integer) to service_role;

-- Stores (or replaces) a user's sealed provider key.
create function public.ai_key_put(p_user uuid, p_provider text, p_key_id text, p_nonce text, p_ciphertext text)
returns void
language sql volatile security definer set search_path = ''
as $$
  insert into public.ai_user_api_keys (user_id, provider, key_id, nonce, ciphertext)
  values (p_user, p_provider, p_key_id, p_nonce, p_ciphertext)
  on conflict (user_id, provider) do update
    set key_id = excluded.key_id, nonce = excluded.nonce, ciphertext = excluded.ciphertext, updated_at = now()
$$;
grant execute on function public.ai_key_put(uuid, text, text, text, text) to service_role;

-- -----------------------------------------------------------------------------
-- websocket-handler: rooms, sequence numbers, presence
-- -----------------------------------------------------------------------------

-- Opens (or resumes) a session in the caller's own conversation. A resume presents
-- the earlier session's token hash; the session keeps its id and last_seq.
create function public.ai_session_open(p_user uuid, p_conversation uuid, p_token_hash text, p_resume_hash text default null)
returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_session public.user_sessions;
  v_room_seq bigint;
begin
  select room_seq into v_room_seq from public.conversations where id = p_conversation and user_id = p_user;
  if v_room_seq is null then
    raise exception using errcode = 'EC404', message = 'conversation_not_found';
  end if;
  if p_token_hash is null or p_token_hash !~ '^[0-9a-f]{64}$' then
    raise exception using errcode = '22023', message = 'p_token_hash must be a sha256 hex digest';
  end if;
  -- Sessions silent for two minutes are gone (the heartbeat is every 30 s).
  update public.user_sessions set status = 'disconnected'
   where conversation_id = p_conversation and status = 'connected' and last_seen_at < now() - interval '2 minutes';
  if p_resume_hash is not null then
    update public.user_sessions
       set token_hash = p_token_hash, status = 'connected', last_seen_at = now()
     where token_hash = p_resume_hash and user_id = p_user and conversation_id = p_conversation
    returning * into v_session;
    if v_session.id is null then
      raise exception using errcode = 'EC404', message = 'session_not_found';
    end if;
  else
    insert into public.user_sessions (user_id, conversation_id, token_hash, last_seq)
    values (p_user, p_conversation, p_token_hash, v_room_seq)
    returning * into v_session;
  end if;
  return jsonb_build_object('session_id', v_session.id, 'last_seq', v_session.last_seq, 'room_seq', v_room_seq);
end
$$;
grant execute on function public.ai_session_open(uuid, uuid, text, text) to service_role;

-- Heartbeat (and the last sequence number the client has) or disconnect.
create function public.ai_session_touch(p_user uuid, p_session uuid, p_last_seq bigint, p_connected boolean)
returns void
language sql volatile security definer set search_path = ''
as $$
  update public.user_sessions
     set last_seq = greatest(last_seq, coalesce(p_last_seq, 0)), last_seen_at = now(),
         status = case when p_connected then 'connected' else 'disconnected' end
   where id = p_session and user_id = p_user
$$;
grant execute on function public.ai_session_touch(uuid, uuid, bigint, boolean) to service_role;

-- Appends a message to a room under the conversation's lock: the next sequence number.
create function public.ai_room_post(p_user uuid, p_conversation uuid, p_kind text, p_payload jsonb) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_seq bigint;
  v_at timestamptz;
begin
  update public.conversations set room_seq = room_seq + 1, updated_at = now()
   where id = p_conversation and user_id = p_user
  returning room_seq into v_seq;
  if v_seq is null then
    raise exception using errcode = 'EC404', message = 'conversation_not_found';
  end if;
  insert into public.ai_room_events (conversation_id, seq, user_id, kind, payload)
  values (p_conversation, v_seq, p_user, p_kind, p_payload) returning created_at into v_at;
  return jsonb_build_object('seq', v_seq, 'created_at', v_at);
end
$$;
grant execute on function public.ai_room_post(uuid, uuid, text, jsonb) to service_role;

-- Room messages after p_after, oldest first.
create function public.ai_room_read(p_user uuid, p_conversation uuid, p_after bigint, p_limit integer default 200)
returns jsonb
language plpgsql stable security definer set search_path = ''
as $$
begin
  if not exists (select 1 from public.conversations where id = p_conversation and user_id = p_user) then
    raise exception using errcode = 'EC404', message = 'conversation_not_found';
  end if;
  return coalesce((
    select jsonb_agg(jsonb_build_object('seq', e.seq, 'kind', e.kind, 'payload', e.payload, 'created_at', e.created_at)
                     order by e.seq)
      from (select * from public.ai_room_events
             where conversation_id = p_conversation and seq > greatest(coalesce(p_after, 0), 0)
             order by seq limit least(greatest(coalesce(p_limit, 200), 1), 1000)) e), '[]'::jsonb);
end
$$;
grant execute on function public.ai_room_read(uuid, uuid, bigint, integer) to service_role;
