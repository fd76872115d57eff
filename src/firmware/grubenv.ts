/**
 * GRUB's environment block (grub-editenv, load_env/save_env): a 1024-byte file that starts
 * with "# GRUB Environment Block\n", holds "name=value\n" lines and is padded with '#'. GRUB
 * rewrites it in place, so it must keep its size exactly. Pure codec.
 */
export const GRUBENV_SIZE = 1024;
const SIGNATURE = '# GRUB Environment Block\n';
// GRUB escapes '\\' and newlines in values; the variables vipshift uses never need it.
const SAFE = /^[A-Za-z0-9_.:-]*$/;

export class GrubenvError extends Error {}

export function parseGrubenv(block: Buffer, source = 'grubenv'): Map<string, string> {
  const text = block.toString('latin1');
  if (block.length !== GRUBENV_SIZE || !text.startsWith(SIGNATURE)) {
    throw new GrubenvError(`${source}: not a GRUB environment block (${block.length} bytes)`);
  }
  const vars = new Map<string, string>();
  for (const line of text.slice(SIGNATURE.length).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new GrubenvError(`${source}: malformed line '${line}'`);
    vars.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return vars;
}

export function encodeGrubenv(vars: Map<string, string>): Buffer {
  let text = SIGNATURE;
  for (const [name, value] of vars) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new GrubenvError(`grubenv: invalid variable name '${name}'`);
    if (!SAFE.test(value)) throw new GrubenvError(`grubenv: value of ${name} needs escaping: '${value}'`);
    text += `${name}=${value}\n`;
  }
  if (text.length > GRUBENV_SIZE) throw new GrubenvError(`grubenv: ${text.length} bytes do not fit in ${GRUBENV_SIZE}`);
  return Buffer.from(text.padEnd(GRUBENV_SIZE, '#'), 'latin1');
}
