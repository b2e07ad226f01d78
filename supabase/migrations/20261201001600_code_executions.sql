-- =============================================================================
-- code-execution (seed 002): the record of every sandboxed run.
-- =============================================================================
--
-- Tables:
--   code_executions   one row per run: the code, its stdin, how it ended
--                     (ok / error / timeout / memory_limit / output_limit), the
--                     output kept, the result, the error and its line, and what the
--                     run spent (duration, fuel, peak memory) against its limits.
--
-- Only the code-execution function writes rows (as the service role, with the
-- caller's id): a row is the function's account of a run, so users may read and
-- delete their own rows (RLS) but never insert or change one. Sizes are bounded
-- here as well as in the function (systems/code-execution/src/settings.rs): code
-- and stdin at most 512 KiB, each output stream at most 256 KiB (the sandbox's
-- own buffers).
-- =============================================================================

create table public.code_executions (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null references auth.users (id) on delete cascade,
  language text not null check (language in ('javascript', 'typescript', 'python')),
  code text not null check (octet_length(code) between 1 and 524288),
  stdin text not null default '' check (octet_length(stdin) <= 524288),
  outcome text not null
    check (outcome in ('ok', 'error', 'timeout', 'memory_limit', 'output_limit')),
  stdout text not null default '' check (octet_length(stdout) <= 262144),
  stderr text not null default '' check (octet_length(stderr) <= 262144),
  -- The value of the script's last expression, when it ended ok and had one.
  result jsonb,
  error_message text check (error_message is null or length(error_message) <= 65536),
  error_line integer check (error_line is null or error_line > 0),
  duration_ms double precision not null check (duration_ms >= 0),
  fuel_used bigint not null check (fuel_used >= 0),
  fuel_limit bigint not null check (fuel_limit >= 0),
  timeout_ms integer not null check (timeout_ms > 0),
  peak_memory_bytes bigint not null check (peak_memory_bytes >= 0),
  created_at timestamptz not null default now()
);
create index code_executions_user_idx on public.code_executions (user_id, created_at desc);

alter table public.code_executions enable row level security;
create policy code_executions_owner_read on public.code_executions for select to authenticated
  using (user_id = (select auth.uid()));
create policy code_executions_owner_delete on public.code_executions for delete to authenticated
  using (user_id = (select auth.uid()));

-- Default privileges already withhold everything from anon and authenticated
-- (20261201000100_api_privileges.sql) but give service_role every right; revoked
-- from all of them so this table's rights are exactly the grants below. Nobody
-- updates a record.
revoke all on table public.code_executions from public, anon, authenticated, service_role;
grant select, delete on public.code_executions to authenticated;
grant select, insert, delete on public.code_executions to service_role;
