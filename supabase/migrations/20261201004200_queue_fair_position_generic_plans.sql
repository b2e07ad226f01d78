-- =============================================================================
-- Job queue: private.next_fair_position keeps its plans.
-- =============================================================================
--
-- Every enqueue calls next_fair_position, whose queries take the queue as a
-- parameter. Under the default plan_cache_mode, plpgsql kept planning them afresh for
-- every call (a custom plan looked cheaper than the generic one), and planning - the
-- min/max rewrite of its max() over in-flight jobs, the predicate proofs of the jobs
-- table's partial indexes - was 30 % of an enqueue's database time (perf, 3,000
-- enqueue_job calls: preprocess_minmax_aggregates alone 20 %). Each of its queries is
-- a probe of one partial index whatever the queue, so the generic plan is the right
-- one: enqueue_job went from 276 to 143 us (pg_stat_statements mean execution time).
-- claim_jobs and complete_job_and_claim already force generic plans.
-- =============================================================================

alter function private.next_fair_position(text, uuid) set plan_cache_mode = force_generic_plan;
