-- Part of the local baseline (scripts/local/baseline.sql includes it; never
-- a migration): the metadata half of Supabase Storage, which every project
-- has. Idempotent. The local Storage API (scripts/local/storage_api/) keeps
-- one row per object here and the bytes in the local S3 server. It reads and
-- writes these rows as the caller (role and JWT claims set per transaction),
-- so the policies an app puts on storage.objects decide who may read and
-- write, as on Supabase; the service role bypasses them. Columns are the ones
-- Supabase's tables have that apps and policies use.
create schema if not exists storage;
grant usage on schema storage to anon, authenticated, service_role;

create table if not exists storage.buckets (
  id text primary key,
  name text not null unique,
  owner uuid,
  owner_id text,
  public boolean not null default false,
  file_size_limit bigint,
  allowed_mime_types text[],
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create table if not exists storage.objects (
  id uuid primary key default extensions.gen_random_uuid(),
  bucket_id text not null references storage.buckets (id),
  name text not null,
  owner uuid,
  owner_id text,
  metadata jsonb,
  user_metadata jsonb,
  version text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  last_accessed_at timestamptz not null default now(),
  path_tokens text[] generated always as (string_to_array(name, '/')) stored,
  unique (bucket_id, name)
);
create index if not exists objects_bucket_name_prefix on storage.objects (bucket_id, name text_pattern_ops);

-- RLS on both, no policies: only what an app's migrations allow gets through.
alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
grant all on storage.buckets, storage.objects to anon, authenticated, service_role;

-- Path helpers for policies, e.g. (storage.foldername(name))[1] = auth.uid()::text.
-- 'a/b/c.png': foldername {a,b}, filename 'c.png', extension 'png' ('' without a dot).
create or replace function storage.foldername(name text) returns text[]
language sql immutable as $$
  select coalesce((string_to_array(name, '/'))[1:cardinality(string_to_array(name, '/')) - 1], '{}')
$$;

create or replace function storage.filename(name text) returns text
language sql immutable as $$
  select (string_to_array(name, '/'))[cardinality(string_to_array(name, '/'))]
$$;

create or replace function storage.extension(name text) returns text
language sql immutable as $$
  select case when storage.filename(name) like '%.%'
              then regexp_replace(storage.filename(name), '^.*\.', '') else '' end
$$;

grant execute on function storage.foldername(text), storage.filename(text), storage.extension(text)
  to anon, authenticated, service_role;
