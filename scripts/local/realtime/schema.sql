-- The `realtime` schema every Supabase project has, as far as apps use it:
-- realtime.messages (whose RLS policies authorise private channels),
-- realtime.topic(), realtime.send() and realtime.broadcast_changes(), with
-- the signatures and behaviour Supabase documents. Included by baseline.sql;
-- migrations must not create it (it exists on every hosted project).
-- Idempotent. The local Realtime server (scripts/local/realtime/) reads rows
-- inserted into realtime.messages from the WAL, like any other change, and
-- delivers them as broadcasts.

create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

-- Supabase partitions this table by day and drops partitions after a few
-- days; locally it is one table and the server deletes delivered rows after
-- an hour. `private` says which channels see the message: a private
-- broadcast reaches only channels joined with config.private = true.
create table if not exists realtime.messages (
  id uuid not null default gen_random_uuid(),
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp not null default now(),
  inserted_at timestamp not null default now(),
  primary key (id, inserted_at)
);
alter table realtime.messages enable row level security;
-- As on Supabase: the API roles hold the table rights and the app's policies
-- decide (no policy = no private channel for anyone but the service role).
grant select, insert, update on realtime.messages to anon, authenticated;
grant all on realtime.messages to service_role;

-- The topic being authorised, for use in policies on realtime.messages
-- (`using (realtime.topic() = 'room:' || auth.uid())`). The server sets
-- realtime.topic for the transaction in which it checks a join.
create or replace function realtime.topic() returns text
language sql stable as $$
  select nullif(current_setting('realtime.topic', true), '')::text
$$;
grant execute on function realtime.topic() to anon, authenticated, service_role;

-- Broadcasts `payload` as `event` on `topic`; private (the default) reaches
-- only private channels. Security definer so that triggers running as an API
-- role can call it whatever the policies on realtime.messages say; a failure
-- is a warning, never an error in the caller's transaction (as documented).
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void language plpgsql volatile security definer set search_path = '' as $$
begin
  insert into realtime.messages (payload, event, topic, private, extension)
  values (payload, event, topic, private, 'broadcast');
exception when others then
  raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
end
$$;

-- For row triggers: broadcasts the change as {schema, table, operation,
-- record, old_record} (the shape realtime-js types as a broadcast change) on
-- a private topic. For statement triggers record and old_record are null.
create or replace function realtime.broadcast_changes(
  topic_name text, event_name text, operation text, table_name text, table_schema text,
  new record, old record, level text default 'ROW'
) returns void language plpgsql volatile security definer set search_path = '' as $$
declare
  change jsonb;
begin
  change := jsonb_build_object(
    'id', gen_random_uuid(),
    'schema', table_schema,
    'table', table_name,
    'operation', operation,
    'record', case when level = 'ROW' and operation in ('INSERT', 'UPDATE') then to_jsonb(new) end,
    'old_record', case when level = 'ROW' and operation in ('UPDATE', 'DELETE') then to_jsonb(old) end
  );
  perform realtime.send(change, event_name, topic_name, true);
end
$$;

-- Only SQL running as the owner or the service role may broadcast; apps call
-- these from security definer triggers, as Supabase's guides show.
revoke all on function realtime.send(jsonb, text, text, boolean) from public, anon, authenticated;
revoke all on function realtime.broadcast_changes(text, text, text, text, text, record, record, text)
  from public, anon, authenticated;
grant execute on function realtime.send(jsonb, text, text, boolean) to service_role;
grant execute on function realtime.broadcast_changes(text, text, text, text, text, record, record, text) to service_role;

-- Local server internals below (not on Supabase, whose server is Elixir):
-- only the server's superuser connection calls them.

-- Which of `keys` (a JSON array of primary-key objects) each subscriber can
-- SELECT from `tbl` under its own role and JWT claims, i.e. with the table's
-- RLS policies applied per subscriber. `subscribers` is a JSON array of
-- {role, claims}. Returns (subscriber, key) 1-based index pairs. Role and
-- claims are transaction-local and reset after each subscriber; a subscriber
-- whose policies fail (e.g. no privilege) sees nothing.
create or replace function realtime.local_visible_rows(tbl regclass, pk text[], keys jsonb, subscribers jsonb)
returns table(subscriber int, key_index int)
language plpgsql volatile set search_path = '' as $$
declare
  s record;
  q text;
  me text := current_user;
begin
  select format(
    'select e.n::int from jsonb_array_elements($1) with ordinality e(v, n) '
    'cross join lateral jsonb_populate_record(null::%s, e.v) k join %s t on %s',
    tbl, tbl, string_agg(format('t.%1$I = k.%1$I', c), ' and '))
  into q from unnest(pk) c;
  for s in
    select x.n::int as n, x.v ->> 'role' as r, coalesce(x.v -> 'claims', '{}') as c
    from jsonb_array_elements(subscribers) with ordinality x(v, n)
  loop
    begin
      perform set_config('request.jwt.claims', s.c::text, true);
      perform set_config('role', s.r, true);
      return query execute 'select ' || s.n || ', v.n from (' || q || ') v(n)' using keys;
      perform set_config('role', me, true);
    exception when others then
      perform set_config('role', me, true);
    end;
  end loop;
  perform set_config('request.jwt.claims', '', true);
end
$$;

-- Whether a caller may read (join) and write (broadcast, track) a private
-- channel `topic`: a probe row is inserted as the owner, then read back and
-- inserted again under the caller's role, claims and realtime.topic, so the
-- policies on realtime.messages decide, as on Supabase. The server runs it in
-- a transaction it rolls back, so no probe row survives.
create or replace function realtime.local_authorize(topic text, role text, claims jsonb)
returns table(can_read boolean, can_write boolean)
language plpgsql volatile set search_path = '' as $$
declare
  probe uuid;
  me text := current_user;
  r boolean := false;
  w boolean := false;
begin
  insert into realtime.messages (topic, extension, private, payload, event)
  values (topic, 'broadcast', true, '{}', 'authorization') returning id into probe;
  perform set_config('realtime.topic', topic, true);
  perform set_config('request.jwt.claims', claims::text, true);
  begin
    perform set_config('role', role, true);
    select exists (select 1 from realtime.messages m where m.id = probe) into r;
    perform set_config('role', me, true);
  exception when others then
    perform set_config('role', me, true);
  end;
  begin
    perform set_config('role', role, true);
    insert into realtime.messages (topic, extension, private, payload, event)
    values (topic, 'broadcast', true, '{}', 'authorization');
    w := true;
    perform set_config('role', me, true);
  exception when others then
    perform set_config('role', me, true);
  end;
  return query select r, w;
end
$$;

revoke all on function realtime.local_visible_rows(regclass, text[], jsonb, jsonb) from public, anon, authenticated, service_role;
revoke all on function realtime.local_authorize(text, text, jsonb) from public, anon, authenticated, service_role;
