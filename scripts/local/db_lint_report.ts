// The findings `supabase db lint` prints as JSON, one line each, then the
// counts per level: easier to read in a log than the CLI's JSON.
//
//   deno run --allow-read scripts/local/db_lint_report.ts <lint.json>
interface Issue {
  level?: string;
  message?: string;
  statement?: { lineNumber?: string };
  query?: { text?: string };
}

const text = (await Deno.readTextFile(Deno.args[0])).trim();
const findings: { function?: string; issues?: Issue[] }[] = text ? JSON.parse(text) : [];
const counts = new Map<string, number>();
for (const fn of findings) {
  for (const issue of fn.issues ?? []) {
    const level = issue.level ?? "?";
    counts.set(level, (counts.get(level) ?? 0) + 1);
    const where = issue.statement?.lineNumber;
    const query = issue.query?.text;
    console.log(
      `    ${level.padEnd(14)} ${fn.function}${where ? ":" + where : ""}: ${issue.message}` +
        (query ? ` [${query}]` : ""),
    );
  }
}
const summary = [...counts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([level, n]) => `${n} ${level}`);
console.log("    lint: " + (summary.join(", ") || "no findings"));
