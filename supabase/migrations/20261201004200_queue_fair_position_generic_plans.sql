-- =============================================================================
-- Job queue: private.next_fair_position always probes its indexes.
-- =============================================================================
--
-- Every enqueue calls next_fair_position, whose queries take the queue as a
-- parameter. Two ways its plans went wrong:
--   - Under the default plan_cache_mode plpgsql planned them afresh on every call (a
--     custom plan looked cheaper than the generic one); planning - the min/max rewrite
--     of its max() over in-flight jobs, the predicate proofs of the jobs table's
--     partial indexes - was 30 % of an enqueue's database time (perf over 3,000
--     enqueue_job calls: preprocess_minmax_aggregates alone 20 %).
--   - On a table whose statistics still say "empty" (a new project, or a burst before
--     autovacuum's next ANALYZE) the planner chose sequential scans, so every enqueue
--     read the whole queue: scripts/bench queue, which starts from an empty table,
--     measured 1.1-1.3 ms of database CPU per enqueued job.
-- Each of its queries is a probe of one partial index whatever the queue and however
-- many rows the statistics claim, so it now keeps generic plans and never considers a
-- sequential or bitmap scan (as claim_jobs does). scripts/bench queue --batches 1,50:
-- enqueue at batch 1 from 0.58x graphile-worker's rate to 1.5-1.6x (0.31-0.38 against
-- 0.62-0.68 ms of database CPU per job); at batch 50 from 0.06-0.14x to 0.46-0.53x.
-- =============================================================================

alter function private.next_fair_position(text, uuid)
  set plan_cache_mode = force_generic_plan;
alter function private.next_fair_position(text, uuid)
  set enable_seqscan = off;
alter function private.next_fair_position(text, uuid)
  set enable_bitmapscan = off;
