/** Where a piece of keepalived.conf came from, and what we say about it. */

export interface Position {
  file: string;
  line: number;
}

/** Broken input: the import stops. The message starts with `file:line:` like a compiler's. */
export class KeepalivedConfigError extends Error {
  readonly file: string;
  readonly line: number;
  readonly reason: string;

  constructor(at: Position, reason: string) {
    super(`${at.file}:${at.line}: error: ${reason}`);
    this.name = 'KeepalivedConfigError';
    this.file = at.file;
    this.line = at.line;
    this.reason = reason;
  }

  /** Every problem found, in one error (the first names the place; `problems` has them all). */
  problems: KeepalivedConfigError[] = [this];

  static all(problems: KeepalivedConfigError[]): KeepalivedConfigError {
    const first = problems[0]!;
    const e = new KeepalivedConfigError(first, first.reason);
    e.problems = problems;
    e.message = problems.map((p) => p.message).join('\n');
    return e;
  }
}

/** Something the import leaves out or changes: never silent, always with its place. */
export interface Warning extends Position {
  message: string;
}

export function formatWarning(w: Warning): string {
  return `${w.file}:${w.line}: warning: ${w.message}`;
}
