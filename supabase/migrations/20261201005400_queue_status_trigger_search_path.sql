-- =============================================================================
-- The status trigger's function sets its search_path, like every other function
-- of the project.
--
-- 20261201005000 left private.job_status_changed() without one, to save the
-- setting's save and restore on every status change (about 1.5 % of a chained
-- job's instructions). Only the owner and security definer functions can update
-- public.jobs, so nothing could exploit that. But Supabase's security advisor
-- flags every function with a mutable search_path, and a project should not ship
-- with that warning. The privilege catalogue test now checks this for every
-- function in public and private.
-- =============================================================================

alter function private.job_status_changed() set search_path = '';
