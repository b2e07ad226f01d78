// Assertions on node:assert (jsr: is not used in this project).
import nodeAssert from "node:assert/strict";

export function assert(cond: unknown, msg?: string): asserts cond {
  nodeAssert.ok(cond, msg);
}

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  nodeAssert.deepStrictEqual(actual, expected, msg);
}

export function assertMatch(actual: string, expected: RegExp, msg?: string): void {
  nodeAssert.match(actual, expected, msg);
}

export function assertIncludes(actual: string, expected: string, msg?: string): void {
  nodeAssert.ok(
    actual.includes(expected),
    msg ?? `expected ${JSON.stringify(actual.slice(0, 300))} to include ${JSON.stringify(expected)}`,
  );
}

/** `actual` must not contain `needle` anywhere (the message never prints the needle itself). */
export function assertExcludes(actual: string, needle: string, what: string): void {
  nodeAssert.ok(!actual.includes(needle), `${what} found where it must not be`);
}

/** Awaits `fn` and returns what it threw; fails when it resolves. */
export async function assertRejects(fn: () => Promise<unknown>, msg?: string): Promise<unknown> {
  try {
    await fn();
  } catch (e) {
    return e;
  }
  nodeAssert.fail(msg ?? "expected the promise to reject");
}
