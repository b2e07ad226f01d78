// The privilege catalogue: what anon, authenticated and service_role may do with
// every function, table, view and sequence of every schema PostgREST exposes,
// read from the database's catalogue (not from a list of names to try), compared
// with the checked-in allow-list privileges.allow.json beside this file.
//
// A new object that nobody allow-listed fails here, and so does a grant that
// widens an existing one. When a migration adds an API on purpose, add its line
// to the allow-list in the same commit (the failure message prints it).
//
// Runs against EDGEWORKS_DB_URL: the test stack's database, and in scripts/test
// also a fresh database built only from the baseline and the migrations.
import { assertEquals } from "../../support/assert.ts";
import { parse as parseToml } from "npm:smol-toml@1.3.1";
import { withDb } from "../../support/stack.ts";

const ROLES = ["anon", "authenticated", "service_role"] as const;
const TABLE_PRIVILEGES = ["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"];

const ALLOW_PATH = new URL("./privileges.allow.json", import.meta.url);

/** The schemas PostgREST serves, as config.toml's [api] section declares them. */
async function exposedSchemas(): Promise<string[]> {
  const config = parseToml(await Deno.readTextFile(new URL("../../../supabase/config.toml", import.meta.url))) as any;
  const schemas = config?.api?.schemas;
  if (!Array.isArray(schemas) || schemas.length === 0) throw new Error("config.toml has no [api] schemas");
  return schemas as string[];
}

type Catalogue = Record<string, string>;

/**
 * One line per object: `function public.f(integer)` -> `anon,service_role`;
 * `table public.t` -> `anon:SELECT authenticated:SELECT,INSERT(id,field_id) ...`.
 */
async function readCatalogue(schemas: string[]): Promise<Catalogue> {
  return await withDb(async (sql) => {
    const out: Catalogue = {};
    const fns = await sql`
      select p.oid::regprocedure::text as sig, n.nspname as schema,
             string_to_array(${ROLES.join(",")}, ',') as roles,
             array(select r from unnest(string_to_array(${ROLES.join(",")}, ',')) r
                    where has_function_privilege(r, p.oid, 'EXECUTE')) as allowed
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
       where n.nspname = any(string_to_array(${schemas.join(",")}, ','))`;
    for (const f of fns) {
      const name = f.sig.includes(".") ? f.sig : `${f.schema}.${f.sig}`;
      out[`function ${name}`] = (f.allowed as string[]).join(",") || "-";
    }
    const rels = await sql`
      select c.oid, n.nspname || '.' || c.relname as name, c.relkind as kind
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = any(string_to_array(${schemas.join(",")}, ',')) and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')`;
    for (const rel of rels) {
      const parts: string[] = [];
      for (const role of ROLES) {
        let privs: string[];
        if (rel.kind === "S") {
          const [row] = await sql`
            select array(select x from unnest(array['USAGE', 'SELECT', 'UPDATE']) x
                          where has_sequence_privilege(${role}, ${rel.oid}::oid, x)) as p`;
          privs = row.p;
        } else {
          const [row] = await sql`
            select array(select x from unnest(string_to_array(${TABLE_PRIVILEGES.join(",")}, ',')) x
                          where has_table_privilege(${role}, ${rel.oid}::oid, x)) as p`;
          privs = row.p;
          // Column grants (a table right the role lacks, held on some columns).
          for (const x of ["SELECT", "INSERT", "UPDATE", "REFERENCES"]) {
            if (privs.includes(x)) continue;
            const cols = await sql`
              select array(select a.attname::text from pg_attribute a
                            where a.attrelid = ${rel.oid}::oid and a.attnum > 0 and not a.attisdropped
                              and has_column_privilege(${role}, ${rel.oid}::oid, a.attnum, ${x})
                            order by a.attname) as c`;
            if (cols[0].c.length) privs.push(`${x}(${cols[0].c.join(",")})`);
          }
        }
        parts.push(`${role}:${privs.join(",") || "-"}`);
      }
      const kind = rel.kind === "S" ? "sequence" : rel.kind === "v" || rel.kind === "m" ? "view" : "table";
      out[`${kind} ${rel.name}`] = parts.join(" ");
    }
    return out;
  });
}

function sorted(c: Catalogue): Catalogue {
  return Object.fromEntries(Object.entries(c).sort(([a], [b]) => a.localeCompare(b)));
}

Deno.test("every exposed function, table, view and sequence has exactly the allow-listed privileges", async () => {
  const actual = sorted(await readCatalogue(await exposedSchemas()));
  const allowed: Catalogue = JSON.parse(await Deno.readTextFile(ALLOW_PATH)).objects;
  const problems: string[] = [];
  for (const [obj, privs] of Object.entries(actual)) {
    if (!(obj in allowed)) problems.push(`not allow-listed: "${obj}": "${privs}"`);
    else if (allowed[obj] !== privs) problems.push(`${obj}: allowed "${allowed[obj]}", actual "${privs}"`);
  }
  for (const obj of Object.keys(allowed)) {
    if (!(obj in actual)) problems.push(`allow-listed but missing from the database: ${obj}`);
  }
  if (Deno.env.get("EDGEWORKS_WRITE_ALLOW_LIST") === "1") {
    await Deno.writeTextFile(ALLOW_PATH, JSON.stringify({ objects: actual }, null, 2) + "\n");
  }
  assertEquals(problems, [], `privileges differ from ${ALLOW_PATH.pathname}:\n${problems.join("\n")}`);
});

Deno.test("every exposed table has row level security and every view runs as its caller", async () => {
  const schemas = await exposedSchemas();
  await withDb(async (sql) => {
    const noRls = await sql`
      select n.nspname || '.' || c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = any(string_to_array(${schemas.join(",")}, ',')) and c.relkind in ('r', 'p') and not c.relrowsecurity`;
    assertEquals(noRls.map((r) => r.name), [], "tables without RLS");
    const definerViews = await sql`
      select n.nspname || '.' || c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where n.nspname = any(string_to_array(${schemas.join(",")}, ',')) and c.relkind = 'v'
         and not coalesce(c.reloptions @> array['security_invoker=true'], false)`;
    assertEquals(definerViews.map((r) => r.name), [], "views that run with their owner's rights");
  });
});

Deno.test("no API role can reach the private schema or run anything in it", async () => {
  await withDb(async (sql) => {
    const [schema] = await sql`select count(*)::int as n from pg_namespace where nspname = 'private'`;
    assertEquals(schema.n, 1, "schema private exists");
    const usage = await sql`
      select r from unnest(array['anon', 'authenticated', 'service_role']) r
       where has_schema_privilege(r, 'private', 'USAGE')`;
    assertEquals(usage.map((u) => u.r), [], "roles with USAGE on private");
    const callable = await sql`
      select p.oid::regprocedure::text as f, r from pg_proc p,
             unnest(array['anon', 'authenticated', 'service_role']) r
       where p.pronamespace = 'private'::regnamespace and has_function_privilege(r, p.oid, 'EXECUTE')`;
    assertEquals(callable.map((c) => `${c.f} ${c.r}`), [], "private functions executable by an API role");
  });
});

Deno.test("every function of the project's schemas fixes its search_path", async () => {
  // Supabase's security advisor flags a function with a mutable search_path: a
  // caller's path could then decide which table or operator a name means.
  await withDb(async (sql) => {
    const mutable = await sql`
      select p.oid::regprocedure::text as f from pg_proc p
       where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)
         and p.prokind in ('f', 'p')
         and not exists (select 1 from unnest(coalesce(p.proconfig, '{}')) c where c like 'search_path=%')
         and not exists (select 1 from pg_depend d
                          where d.classid = 'pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
       order by 1`;
    assertEquals(mutable.map((m) => m.f), [], "functions without a fixed search_path");
  });
});

Deno.test("objects a later migration creates in public start with no rights for anon and authenticated", async () => {
  // What the default privileges give a new function, table and sequence, created
  // as the migration role would and rolled back.
  await withDb(async (sql) => {
    const probe = await sql.begin(async (tx) => {
      await tx`create function public.privilege_probe() returns int language sql as 'select 1'`;
      await tx`create table public.privilege_probe_t (id bigint generated always as identity primary key)`;
      const [row] = await tx`
        select array(select r from unnest(array['anon', 'authenticated']) r
                      where has_function_privilege(r, 'public.privilege_probe()', 'EXECUTE')) as fn,
               array(select r || ':' || x from unnest(array['anon', 'authenticated']) r,
                            unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) x
                      where has_table_privilege(r, 'public.privilege_probe_t', x)) as tbl,
               array(select r || ':' || x from unnest(array['anon', 'authenticated']) r,
                            unnest(array['USAGE', 'SELECT', 'UPDATE']) x
                      where has_sequence_privilege(r, 'public.privilege_probe_t_id_seq', x)) as seq`;
      throw Object.assign(new Error("rollback"), { probe: row });
    }).catch((e) => {
      if (e?.probe) return e.probe;
      throw e;
    });
    assertEquals(probe.fn, [], "EXECUTE on a new function");
    assertEquals(probe.tbl, [], "rights on a new table");
    assertEquals(probe.seq, [], "rights on a new sequence");
  });
});
