/**
 * The generic block parser: walks tokens with the keyword tables of keywords.ts. keepalived's
 * language is line-oriented: a statement is a keyword and the words after it on the same line,
 * optionally followed by `{` (on that line or the next) opening its block.
 */
import { KeepalivedConfigError, type Position, type Warning } from './diagnostics.js';
import { sections, type KeywordSpec, type SectionName } from './keywords.js';
import type { Token } from './tokenizer.js';

export interface Statement extends Position {
  /** The canonical keyword (an alias such as lvs_sched arrives as lb_algo). */
  keyword: string;
  args: Token[];
  /** A section block's statements. */
  children?: Statement[];
  /** A `lines` block: the words of each line. */
  lines?: Token[][];
}

export function parse(tokens: readonly Token[], warnings: Warning[]): Statement[] {
  return new Parser(tokens, warnings).section('root', undefined);
}

function isBrace(t: Token | undefined, brace: '{' | '}'): boolean {
  return t !== undefined && !t.quoted && t.text === brace;
}

function sameLine(a: Token, b: Token): boolean {
  return a.line === b.line && a.file === b.file;
}

class Parser {
  private pos = 0;

  constructor(
    private readonly tokens: readonly Token[],
    private readonly warnings: Warning[],
  ) {}

  /** Statements up to the `}` closing `open`, or to the end when `open` is undefined. */
  section(name: SectionName, open: Token | undefined): Statement[] {
    const table = sections[name];
    const out: Statement[] = [];
    for (;;) {
      const t = this.tokens[this.pos];
      if (t === undefined) {
        if (open) throw new KeepalivedConfigError(open, `'{' opened here is never closed (missing '}')`);
        return out;
      }
      if (isBrace(t, '}')) {
        if (!open) throw new KeepalivedConfigError(t, `unexpected '}' (no block to close)`);
        this.pos++;
        return out;
      }
      if (isBrace(t, '{')) throw new KeepalivedConfigError(t, `unexpected '{' (a block must follow a keyword)`);
      const words = this.lineWords();
      const keyword = t;
      const args = words.slice(1);
      const brace = isBrace(this.tokens[this.pos], '{') ? this.tokens[this.pos++] : undefined;
      const spec: KeywordSpec | undefined = Object.hasOwn(table, keyword.text) ? table[keyword.text] : undefined;
      if (!spec) {
        this.warn(keyword, `unknown keyword '${keyword.text}' in ${name === 'root' ? 'the top level' : name}; ignored`);
        if (brace) this.skip(brace);
        continue;
      }
      const [min, max] = spec.args;
      if (args.length < min || args.length > max) {
        const want = min === max ? `${min}` : `${min} to ${max}`;
        throw new KeepalivedConfigError(keyword, `'${keyword.text}' takes ${want} argument${max === 1 ? '' : 's'}, got ${args.length}`);
      }
      if (spec.block && !brace) throw new KeepalivedConfigError(keyword, `'${keyword.text}' needs a { block }`);
      if (!spec.block && brace) throw new KeepalivedConfigError(brace, `'${keyword.text}' takes no block`);
      const statement: Statement = { keyword: spec.alias ?? keyword.text, args, file: keyword.file, line: keyword.line };
      if (brace && spec.block === 'skip') this.skip(brace);
      else if (brace && spec.block === 'lines') statement.lines = this.lines(brace);
      else if (brace && spec.block !== undefined && spec.block !== 'skip' && spec.block !== 'lines') {
        statement.children = this.section(spec.block, brace);
      }
      if (spec.unsupported) this.warn(keyword, `${keyword.text}: ${spec.unsupported}`);
      out.push(statement);
    }
  }

  /** The token at pos and the following ones on its line, up to a brace. */
  private lineWords(): Token[] {
    const first = this.tokens[this.pos++]!;
    const words = [first];
    for (let t = this.tokens[this.pos]; t && sameLine(t, first) && !isBrace(t, '{') && !isBrace(t, '}'); t = this.tokens[this.pos]) {
      words.push(t);
      this.pos++;
    }
    return words;
  }

  private lines(open: Token): Token[][] {
    const out: Token[][] = [];
    for (;;) {
      const t = this.tokens[this.pos];
      if (t === undefined) throw new KeepalivedConfigError(open, `'{' opened here is never closed (missing '}')`);
      if (isBrace(t, '}')) {
        this.pos++;
        return out;
      }
      if (isBrace(t, '{')) throw new KeepalivedConfigError(t, `unexpected '{' in a list`);
      out.push(this.lineWords());
    }
  }

  /** Reads over a block whose contents vipshift does not interpret; braces must balance. */
  private skip(open: Token): void {
    const opened: Token[] = [open];
    while (opened.length > 0) {
      const t = this.tokens[this.pos++];
      if (t === undefined) throw new KeepalivedConfigError(opened[opened.length - 1]!, `'{' opened here is never closed (missing '}')`);
      if (isBrace(t, '{')) opened.push(t);
      else if (isBrace(t, '}')) opened.pop();
    }
  }

  private warn(at: Position, message: string): void {
    this.warnings.push({ file: at.file, line: at.line, message });
  }
}
