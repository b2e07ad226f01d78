-- =============================================================================
-- health and chat-submit: the rate-limit token taken inside the function's one
-- SQL call, so a successful request is one PostgREST round trip instead of two.
-- =============================================================================
--
-- Each PostgREST call costs the edge function ~150-200 us of CPU (a Deno fetch)
-- plus a database transaction; health made two (rate_limit_take, health_ping) and
-- chat-submit two (rate_limit_take, chat_submit). Both now call one function that
-- takes the token in the same transaction as the work:
--
--   private.rate_limit_bucket_take   the token bucket, moved out of
--                                    public.rate_limit_take unchanged (same row
--                                    lock, clock read and arithmetic) so there is
--                                    one implementation; rate_limit_take (still
--                                    called when a request fails before its SQL,
--                                    and by the TypeScript peers) wraps it.
--   public.health_check              health_ping plus the token. The work is a
--                                    read, so the token is taken after it and the
--                                    bucket row stays locked only until commit.
--   public.chat_submit_limited       chat_submit plus the token. Refused, it does
--                                    no work. The token is taken AFTER the work
--                                    when an unlocked look at the bucket says it
--                                    will be allowed: taking it first would hold
--                                    the caller's bucket row lock through all of
--                                    chat_submit and serialise one user's
--                                    concurrent submits (to different sessions)
--                                    behind it. If a concurrent request emptied
--                                    the bucket meanwhile, the take refuses and
--                                    the function raises ER429 (detail: tokens),
--                                    which rolls the work back; the function
--                                    answers 429 from it.
--
-- The answer carries {"rate_limit": {"allowed", "tokens"}}; refused, nothing else.
-- A null p_rate_key takes no token. A raised error rolls the take back with the
-- work; the function then takes the token with rate_limit_take, so every request
-- still costs exactly one token. Only the service role may call these (like
-- rate_limit_take): an API role must not take tokens from arbitrary keys.
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived; each API function is granted explicitly below.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create function private.rate_limit_bucket_take(
  p_key text,
  p_cost integer,
  p_capacity integer,
  p_refill_per_sec double precision,
  out allowed boolean,
  out tokens double precision
)
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_now bigint;
  v_tokens double precision;
  v_updated bigint;
begin
  if p_key is null or length(p_key) = 0 or length(p_key) > 300 then
    raise exception 'rate_limit_take: key must be 1..300 characters' using errcode = '22023';
  end if;
  if p_cost is null or p_cost < 1 or p_capacity is null or p_capacity < 1
     or p_refill_per_sec is null or p_refill_per_sec <= 0 then
    raise exception 'rate_limit_take: cost and capacity must be >= 1 and refill_per_sec > 0'
      using errcode = '22023';
  end if;

  -- The row lock serialises every request on this key until we commit.
  select b.tokens, b.updated_ms into v_tokens, v_updated
    from public.rate_limit_buckets b
   where b.key = p_key
     for update;
  if not found then
    -- A caller's first request (or the first since the bucket was pruned): create it
    -- full, then lock whichever row won if another first request raced this one.
    insert into public.rate_limit_buckets (key, tokens, updated_ms)
    values (p_key, p_capacity, (extract(epoch from clock_timestamp()) * 1000)::bigint)
    on conflict (key) do nothing;
    select b.tokens, b.updated_ms into v_tokens, v_updated
      from public.rate_limit_buckets b
     where b.key = p_key
       for update;
  end if;

  -- Read the clock after the lock is ours, so waiting does not skew the refill.
  v_now := (extract(epoch from clock_timestamp()) * 1000)::bigint;
  v_tokens := least(p_capacity::double precision,
                    v_tokens + greatest(0, v_now - v_updated) * p_refill_per_sec / 1000.0);
  if p_cost <= v_tokens then
    v_tokens := v_tokens - p_cost;
    allowed := true;
  else
    allowed := false;
  end if;

  update public.rate_limit_buckets
  set tokens = v_tokens, updated_ms = greatest(v_updated, v_now)
  where key = p_key;

  tokens := v_tokens;
end;
$$;

-- Whether a take would be allowed now, from an unlocked read (no row: a full bucket).
-- Only a hint for choosing the order of work and take; the take decides.
create function private.rate_limit_bucket_would_allow(
  p_key text,
  p_cost integer,
  p_capacity integer,
  p_refill_per_sec double precision
)
returns boolean
language plpgsql
volatile
set search_path = ''
as $$
declare
  v_tokens double precision;
  v_updated bigint;
begin
  select b.tokens, b.updated_ms into v_tokens, v_updated
    from public.rate_limit_buckets b
   where b.key = p_key;
  if not found then
    return p_cost <= p_capacity;
  end if;
  return p_cost <= least(p_capacity::double precision,
    v_tokens + greatest(0, (extract(epoch from clock_timestamp()) * 1000)::bigint - v_updated)
               * p_refill_per_sec / 1000.0);
end;
$$;

revoke execute on function private.rate_limit_bucket_take(text, integer, integer, double precision)
  from public, anon, authenticated, service_role;
revoke execute on function private.rate_limit_bucket_would_allow(text, integer, integer, double precision)
  from public, anon, authenticated, service_role;

create or replace function public.rate_limit_take(
  p_key text,
  p_cost integer,
  p_capacity integer,
  p_refill_per_sec double precision
)
returns table (allowed boolean, tokens double precision)
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  return query select t.allowed, t.tokens
    from private.rate_limit_bucket_take(p_key, p_cost, p_capacity, p_refill_per_sec) t;
end;
$$;

create function public.health_check(
  p_rate_key text default null,
  p_rate_cost integer default null,
  p_rate_capacity integer default null,
  p_rate_refill_per_sec double precision default null
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_ping jsonb := public.health_ping();
  v_allowed boolean;
  v_tokens double precision;
begin
  if p_rate_key is null then
    return v_ping;
  end if;
  select t.allowed, t.tokens into v_allowed, v_tokens
    from private.rate_limit_bucket_take(p_rate_key, p_rate_cost, p_rate_capacity, p_rate_refill_per_sec) t;
  if not v_allowed then
    return jsonb_build_object('rate_limit', jsonb_build_object('allowed', false, 'tokens', v_tokens));
  end if;
  return v_ping || jsonb_build_object('rate_limit', jsonb_build_object('allowed', true, 'tokens', v_tokens));
end;
$$;

create function public.chat_submit_limited(
  p_rate_key text,
  p_rate_cost integer,
  p_rate_capacity integer,
  p_rate_refill_per_sec double precision,
  p_user uuid,
  p_session_id text,
  p_message text,
  p_field_id text default null,
  p_priority integer default 0,
  p_max_questions integer default 10,
  p_session_max_age_seconds integer default 86400,
  p_max_attempts integer default 4,
  p_backoff_base_ms integer default 1000,
  p_idempotency_key text default null
)
returns jsonb
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  v_allowed boolean;
  v_tokens double precision;
  v_result jsonb;
begin
  if p_rate_key is null then
    return public.chat_submit(p_user, p_session_id, p_message, p_field_id, p_priority, p_max_questions,
      p_session_max_age_seconds, p_max_attempts, p_backoff_base_ms, p_idempotency_key);
  end if;
  if private.rate_limit_bucket_would_allow(p_rate_key, p_rate_cost, p_rate_capacity, p_rate_refill_per_sec) then
    v_result := public.chat_submit(p_user, p_session_id, p_message, p_field_id, p_priority, p_max_questions,
      p_session_max_age_seconds, p_max_attempts, p_backoff_base_ms, p_idempotency_key);
    select t.allowed, t.tokens into v_allowed, v_tokens
      from private.rate_limit_bucket_take(p_rate_key, p_rate_cost, p_rate_capacity, p_rate_refill_per_sec) t;
    if not v_allowed then
      -- Emptied by a concurrent request since the look: undo the work.
      raise exception using errcode = 'ER429', message = 'rate_limited', detail = v_tokens::text;
    end if;
  else
    select t.allowed, t.tokens into v_allowed, v_tokens
      from private.rate_limit_bucket_take(p_rate_key, p_rate_cost, p_rate_capacity, p_rate_refill_per_sec) t;
    if not v_allowed then
      return jsonb_build_object('rate_limit', jsonb_build_object('allowed', false, 'tokens', v_tokens));
    end if;
    v_result := public.chat_submit(p_user, p_session_id, p_message, p_field_id, p_priority, p_max_questions,
      p_session_max_age_seconds, p_max_attempts, p_backoff_base_ms, p_idempotency_key);
  end if;
  return v_result || jsonb_build_object('rate_limit', jsonb_build_object('allowed', true, 'tokens', v_tokens));
end;
$$;

grant execute on function public.health_check(text, integer, integer, double precision) to service_role;
grant execute on function public.chat_submit_limited(
  text, integer, integer, double precision,
  uuid, text, text, text, integer, integer, integer, integer, integer, text
) to service_role;
