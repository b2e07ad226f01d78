-- =============================================================================
-- Job queue: an enqueue without an owner no longer reads every waiting job of its
-- queue.
-- =============================================================================
--
-- private.next_fair_position reads the owner's last waiting position. For a job
-- without an owner that is
--
--   where queue = $1 and owner_id is null and status in ('pending', 'retrying')
--   order by fair_position desc limit 1
--
-- over jobs_waiting_tenant_idx (queue, owner_id, fair_position desc). Postgres does not
-- treat `owner_id is null` as an equality that keeps the index's order, so it read
-- every waiting ownerless job of the queue and sorted them: on a queue of 34,000
-- waiting jobs, 4.8 ms per enqueue (EXPLAIN ANALYZE: Index Only Scan, rows=33943, then
-- a top-N sort), and scripts/bench queue measured 0.6-1.3 ms of database CPU per
-- enqueued job against graphile-worker's 0.02-0.6.
--
-- The waiting-jobs index is split in two by owner, each job in exactly one of them (as
-- many index insertions per job as before):
--   jobs_waiting_ownerless_idx (queue, fair_position desc), ownerless waiting jobs: the
--     query above reads one entry;
--   jobs_waiting_owner_idx (queue, owner_id, fair_position desc), owned waiting jobs:
--     `owner_id = $2` implies the predicate, as before.
-- next_fair_position is unchanged; both of its queries now read one index entry.
-- =============================================================================

create index jobs_waiting_ownerless_idx on public.jobs (queue, fair_position desc)
  where status in ('pending', 'retrying') and owner_id is null;
create index jobs_waiting_owner_idx on public.jobs (queue, owner_id, fair_position desc)
  where status in ('pending', 'retrying') and owner_id is not null;
drop index public.jobs_waiting_tenant_idx;
