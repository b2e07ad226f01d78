-- =============================================================================
-- chat_submit and rate_limit_take: the same answers for less database work.
-- =============================================================================
--
-- Profiled with pg_stat_statements (track = all) under pgbench, chat_submit plus
-- rate_limit_take per submit as chat-submit makes them:
--
--   private.chat_queue_timing   a `language sql` function: PostgreSQL plans a SQL
--                               function's query again on every call (it keeps no
--                               plan between calls), and this one has three
--                               subqueries; it was the largest single statement of
--                               a submit (and runs in every chat-status too).
--                               Now plpgsql, whose plan is cached per session; the
--                               query is unchanged.
--   rate_limit_take             began every call with INSERT ... ON CONFLICT DO
--                               NOTHING (a speculative insertion into the primary
--                               key) although the bucket exists on every call but
--                               a caller's first. Now it locks the row first and
--                               inserts only when there is none, then locks again
--                               (a concurrent first call may have inserted it);
--                               the row lock, the clock read after it and the
--                               arithmetic are unchanged.
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived; each API function is granted explicitly below.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function private.chat_queue_timing(p_queue text default 'chat')
returns jsonb
language plpgsql stable security definer set search_path = ''
as $$
begin
  return jsonb_build_object(
    'avg_processing_ms', coalesce((
      select round(avg(extract(epoch from (j.completed_at - j.started_at)) * 1000))
        from (select completed_at, started_at from public.jobs
               where queue = p_queue and status = 'completed'
                 and completed_at > now() - interval '1 hour'
               order by completed_at desc limit 200) j), 0),
    'samples', (select count(*) from (select 1 from public.jobs
               where queue = p_queue and status = 'completed'
                 and completed_at > now() - interval '1 hour' limit 200) s),
    'active_workers', (select count(*) from public.workers w
               where p_queue = any(w.queues) and w.status = 'active'
                 and w.last_heartbeat_at > now() - interval '60 seconds'));
end
$$;

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
declare
  v_now bigint;
  v_tokens double precision;
  v_updated bigint;
  v_allowed boolean;
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
    v_allowed := true;
  else
    v_allowed := false;
  end if;

  update public.rate_limit_buckets
  set tokens = v_tokens, updated_ms = greatest(v_updated, v_now)
  where key = p_key;

  return query select v_allowed, v_tokens;
end;
$$;
