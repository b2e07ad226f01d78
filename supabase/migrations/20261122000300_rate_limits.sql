-- Rate limiting across isolates: token buckets in Postgres.
--
-- API (service_role only):
--   rate_limit_take(p_key, p_cost, p_capacity, p_refill_per_sec)
--     -> (allowed boolean, tokens double precision)
--     One round trip, atomic under concurrency: the bucket row is created if
--     missing, then locked (SELECT ... FOR UPDATE), refilled and spent before
--     the transaction ends, so two requests can never spend the same token.
--     The arithmetic is the reference in crates/core/src/ratelimit.rs; the
--     clock is the database's, so every isolate agrees on time.
--   rate_limit_prune(p_idle_seconds) -> integer
--     Deletes buckets idle long enough to be full again (they carry no state).

create table public.rate_limit_buckets (
  key text primary key check (length(key) between 1 and 300),
  tokens double precision not null,
  updated_ms bigint not null
);

alter table public.rate_limit_buckets enable row level security;
-- No policies: nobody reads or writes buckets through the API; the functions
-- below run as their owner.
revoke all on public.rate_limit_buckets from anon, authenticated;

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

  insert into public.rate_limit_buckets (key, tokens, updated_ms)
  values (p_key, p_capacity, (extract(epoch from clock_timestamp()) * 1000)::bigint)
  on conflict (key) do nothing;

  -- The row lock serialises every request on this key until we commit.
  select b.tokens, b.updated_ms into v_tokens, v_updated
  from public.rate_limit_buckets b
  where b.key = p_key
  for update;

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

revoke execute on function public.rate_limit_take(text, integer, integer, double precision) from public;
grant execute on function public.rate_limit_take(text, integer, integer, double precision) to service_role;

create or replace function public.rate_limit_prune(p_idle_seconds integer default 3600)
returns integer
language sql
volatile
security definer
set search_path = ''
as $$
  with gone as (
    delete from public.rate_limit_buckets
    where updated_ms < (extract(epoch from clock_timestamp()) * 1000)::bigint - greatest(p_idle_seconds, 60) * 1000::bigint
    returning 1
  )
  select count(*)::integer from gone
$$;

revoke execute on function public.rate_limit_prune(integer) from public;
grant execute on function public.rate_limit_prune(integer) to service_role;
