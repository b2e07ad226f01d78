-- =============================================================================
-- media_record_admin_image: the owner becomes an optional last argument.
-- =============================================================================
--
-- The service role's images have no owner (p_user null). Callers over /rpc leave
-- null arguments out (a PostgREST-compatible server is not guaranteed to pass
-- JSON null through as SQL NULL), which needs a default, and defaults go last.
-- Otherwise unchanged from 20261201001100.
--
--   media_record_admin_image(p_prompt, p_mode, p_path, p_metadata = '{}',
--                            p_user = null) -> jsonb             [service_role]
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived; each API function is granted explicitly below.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

drop function public.media_record_admin_image(uuid, text, text, text, jsonb);

-- An image made by generate-admin-image, recorded like any other (p_user null:
-- made by the service role, visible to it alone).
create function public.media_record_admin_image(
  p_prompt text,
  p_mode text,
  p_path text,
  p_metadata jsonb default '{}'::jsonb,
  p_user uuid default null
) returns jsonb
language plpgsql volatile security definer set search_path = ''
as $$
declare
  v_image public.images;
begin
  if p_user is not null and not exists (select 1 from auth.users u where u.id = p_user) then
    raise exception using errcode = 'EM404', message = 'user_not_found';
  end if;
  -- An admin user's image lives under their prefix; the service role's under admin/.
  if p_path is null or p_path not like coalesce(p_user::text, 'admin') || '/%'
     or p_path ~ '(^|/)\.\.?(/|$)' then
    raise exception using errcode = 'EM400', message = 'path_not_owned';
  end if;
  if p_prompt is null or length(p_prompt) > 4000 then
    raise exception using errcode = '22023', message = 'p_prompt must be at most 4000 characters';
  end if;
  if p_metadata is null or jsonb_typeof(p_metadata) <> 'object' or octet_length(p_metadata::text) > 16384 then
    raise exception using errcode = '22023', message = 'p_metadata must be a JSON object of at most 16 KiB';
  end if;
  insert into public.images (user_id, prompt, model_variant, quality, status, storage_path, image_urls, metadata)
  values (p_user, p_prompt, 'edgeworks-render', left(coalesce(p_mode, 'fast'), 40), 'completed', p_path,
          array[p_path], p_metadata || jsonb_build_object('admin', true))
  returning * into v_image;
  return to_jsonb(v_image);
end
$$;

grant execute on function public.media_record_admin_image(text, text, text, jsonb, uuid) to service_role;
