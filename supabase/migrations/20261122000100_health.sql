-- health_ping(): the round trip the `health` function times. Read-only,
-- reveals nothing beyond the server time and major version.
create or replace function public.health_ping()
returns jsonb
language sql
stable
set search_path = ''
as $$
  select jsonb_build_object(
    'server_time', now(),
    'server_version', current_setting('server_version_num')::int / 10000
  )
$$;

revoke execute on function public.health_ping() from public;
grant execute on function public.health_ping() to anon, authenticated, service_role;
