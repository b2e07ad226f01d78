-- =============================================================================
-- Job queue: less work compiled for every statement that updates public.jobs.
-- =============================================================================
--
-- Every UPDATE of jobs reads back and compiles, per statement, the CHECK constraint on
-- jobs (its stored node tree is parsed from text, then planned as an expression) and
-- the predicate of each partial index the updated row must be tested against. A
-- claim and a completion are two such statements per job, so at batch 1 these costs
-- are paid twice per job however small the rows are. Measured with callgrind on a
-- single-user backend running 300 chained complete_job_and_claim calls (the method of
-- the README section "The queue, one round trip per job"): the CHECK costs about
-- 68,000 instructions per job and each partial index about 25,000, out of 1.18 M.
--
-- 1. Three partial indexes over waiting jobs become one.
--      jobs_waiting_owner_idx     (queue, owner_id, fair_position desc) owned, waiting
--      jobs_waiting_ownerless_idx (queue, fair_position desc)          ownerless, waiting
--      jobs_blocked_idx           (queue) pending with unfinished dependencies
--    are replaced by
--      jobs_waiting_idx           (queue, owner_id, fair_position desc) waiting
--    next_fair_position's two reads of an owner's last waiting position each stay one
--    index entry: `owner_id = $2` or `owner_id is null` is an index condition, and the
--    query orders by (owner_id, fair_position desc), the index's own order once queue
--    is fixed, so no sort is needed for the null case either (20261201004100 split the
--    index because `order by fair_position desc` alone did not match it). queue_stats'
--    count of blocked jobs reads the queue's waiting jobs in jobs_waiting_idx instead
--    of jobs_blocked_idx (queue_stats already counts every waiting job of the queue).
--    Index insertions per job are unchanged: a waiting job was in exactly one of the
--    two waiting indexes, and is in jobs_waiting_idx.
--
-- 2. The CHECK on jobs ((status = 'processing') = (lease_token is not null and
--    lease_expires_at is not null)) moves into the triggers that already run for
--    every change it guards:
--      - jobs_status_changed now fires on UPDATE OF status, lease_token,
--        lease_expires_at (a column list costs nothing per statement, unlike a WHEN
--        clause) and its function refuses the same rows first;
--      - jobs_record_insert (statement level, once per INSERT) refuses a new job that
--        holds a lease, as it refuses one that is not pending.
--    The same SQLSTATE (23514, check_violation) and constraint name (jobs_check) as
--    before, so callers map it as before (crates/queue: invalid argument). The row is
--    refused at the end of the statement instead of when it is written; either way
--    the statement fails and nothing of it stays.
-- =============================================================================

-- Functions created below carry no EXECUTE for public, anon or authenticated: the
-- default privileges of 20261201000100, restated here so this migration does not depend
-- on them having survived. Nothing below is an API function.
alter default privileges for role postgres revoke execute on functions from public;
alter default privileges for role postgres in schema public revoke execute on functions from anon, authenticated;

-- 1. One index over waiting jobs.
create index jobs_waiting_idx on public.jobs (queue, owner_id, fair_position desc)
  where status in ('pending', 'retrying');
drop index public.jobs_waiting_owner_idx;
drop index public.jobs_waiting_ownerless_idx;
drop index public.jobs_blocked_idx;

-- As in 20261201003100, with the owner's last waiting position ordered by
-- (owner_id, fair_position desc) so that both forms read one entry of jobs_waiting_idx.
create or replace function private.next_fair_position(p_queue text, p_owner uuid)
returns bigint
language plpgsql
stable
set search_path = ''
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
set enable_bitmapscan = off
as $$
declare
  v_head bigint;
  v_waiting bigint;
  v_running bigint;
begin
  select j.fair_position into v_head from public.jobs j
   where j.queue = p_queue and j.status in ('pending', 'retrying') and j.pending_dependencies = 0
   order by j.priority desc, j.fair_position, j.run_at, j.seq
   limit 1;
  if p_owner is null then
    select j.fair_position into v_waiting from public.jobs j
     where j.queue = p_queue and j.owner_id is null and j.status in ('pending', 'retrying')
     order by j.owner_id, j.fair_position desc limit 1;
    select max(j.fair_position) into v_running from public.jobs j
     where j.queue = p_queue and j.status = 'processing' and j.owner_id is null;
  else
    select j.fair_position into v_waiting from public.jobs j
     where j.queue = p_queue and j.owner_id = p_owner and j.status in ('pending', 'retrying')
     order by j.owner_id, j.fair_position desc limit 1;
    select max(j.fair_position) into v_running from public.jobs j
     where j.queue = p_queue and j.status = 'processing' and j.owner_id = p_owner;
  end if;
  return greatest(coalesce(v_head, 0), coalesce(v_waiting, 0), coalesce(v_running, 0)) + 1;
end
$$;
revoke all on function private.next_fair_position(text, uuid) from public, anon, authenticated;

-- 2. The lease rule, checked by the triggers.
create or replace function private.job_status_changed()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
  -- The rule the CHECK jobs_check held: a processing job holds a lease, no other does.
  if (new.status = 'processing') <> (new.lease_token is not null and new.lease_expires_at is not null) then
    raise exception using errcode = '23514', constraint = 'jobs_check', schema = 'public', table = 'jobs',
      message = format('job %s is %s: a processing job must hold a lease (token and expiry) and no other job may',
                       new.id, new.status);
  end if;
  if old.status is not distinct from new.status then
    return null;
  end if;
  if pg_catalog.current_setting('edgeworks.job_events_inline', true) is distinct from 'on' then
    perform private.record_job_change(old, new);
  end if;
  if new.queue = 'chat' then
    perform private.chat_mirror_job(new);
  elsif new.queue = 'sdxl_queue' or new.queue = 'wan_queue' then
    perform private.media_mirror_job_status(new);
  end if;
  return null;
end
$$;
revoke all on function private.job_status_changed() from public, anon, authenticated;

create or replace function private.record_job_creation()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
  v_actor text := nullif(current_setting('edgeworks.job_actor', true), '');
begin
  -- A new job is pending, and (jobs_check's rule) a pending job holds no lease. One
  -- read of the new rows; which rule failed is looked up only when one did.
  if exists (select 1 from new_jobs n
              where n.status <> 'pending' or n.lease_token is not null or n.lease_expires_at is not null) then
    if exists (select 1 from new_jobs n where n.status <> 'pending') then
      raise exception using errcode = '22023', message = 'a job must be created pending';
    end if;
    raise exception using errcode = '23514', constraint = 'jobs_check', schema = 'public', table = 'jobs',
      message = 'a job must be created without a lease';
  end if;
  if v_actor is null then
    v_actor := coalesce('user:' || auth.uid()::text,
                        'sql:' || coalesce(nullif(current_setting('role', true), 'none'),
                                           session_user::text));
  end if;
  insert into public.job_events (job_id, owner_id, queue, from_status, to_status, attempt,
                                 actor, worker_id, error, run_at)
  select n.id, n.owner_id, n.queue, null, n.status, n.attempts, v_actor, null, null, n.run_at
    from new_jobs n
   order by n.seq;
  return null;
end
$$;
revoke all on function private.record_job_creation() from public, anon, authenticated;

drop trigger jobs_status_changed on public.jobs;
create trigger jobs_status_changed after update of status, lease_token, lease_expires_at on public.jobs
  for each row execute function private.job_status_changed();
alter table public.jobs drop constraint jobs_check;
