/**
 * Where a validation issue (zod) points and what it says, for the API's `field` and the
 * configuration's file:line:field alike: an unknown key is reported by zod on the object
 * that holds it, and is pointed at the key itself here.
 */
import type { z } from 'zod';

export function issueAt(issue: z.core.$ZodIssue): { path: PropertyKey[]; message: string } {
  if (issue.code !== 'unrecognized_keys') return { path: [...issue.path], message: issue.message };
  const keys = issue.keys;
  return keys.length === 1 ? { path: [...issue.path, keys[0]!], message: 'unknown field' } : { path: [...issue.path], message: `unknown fields ${keys.join(', ')}` };
}
