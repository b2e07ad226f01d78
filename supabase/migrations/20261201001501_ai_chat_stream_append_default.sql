-- =============================================================================
-- ai-chat: ai_stream_append's answer is optional.
-- =============================================================================
--
-- A producer saves events without resending an unchanged answer (the last
-- event after settlement, heartbeats), leaving p_content out; PostgREST finds a
-- function only if every omitted argument has a default. Same function, same
-- grants (service_role only).
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived; each API function is granted explicitly below.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

create or replace function public.ai_stream_append(p_stream uuid, p_events jsonb, p_content text default null)
returns jsonb
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
