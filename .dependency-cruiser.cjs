/**
 * The layer rule of src/ (docs/architecture.md). Folders sit in tiers, lowest first; a folder
 * may import from its own files and from folders of lower tiers only: never upward, never
 * sideways within its tier. So no two folders can form a cycle, and the no-cycles rule keeps
 * files within a folder acyclic too. `make test` runs this (`make layers`).
 */
const TIERS = [
  ['packet', 'log', 'kernel'], // helpers: addresses, frames, checksums; runners of kernel tools
  ['netlink'], // our netlink sockets and codecs
  ['api'], // the signed HTTP layer every API uses
  ['config', 'metrics'], // every configuration schema and its loader; the Prometheus registry
  ['nat', 'vrrp', 'migration', 'keeper', 'keepalived', 'firmware', 'health'], // the parts
  ['replication'], // copies to the keepers and takeover from them (uses keeper and nat)
  ['appliance'], // composes the parts into one box
  ['controller', 'lab'],
  ['console'], // the controller's operator view
  ['cli'],
];

const folders = TIERS.flat();
const below = (tier) => TIERS.slice(0, tier).flat();

const layerRules = TIERS.flatMap((tier, i) =>
  tier.map((folder) => {
    const allowed = [folder, ...below(i)];
    const forbidden = folders.filter((f) => !allowed.includes(f));
    return {
      name: `layers-${folder}`,
      comment: `src/${folder} may import only from ${allowed.join(', ')}`,
      severity: 'error',
      from: { path: `^src/${folder}/` },
      to: { path: `^src/(${forbidden.join('|')})/` },
    };
  }),
).filter((rule) => !rule.to.path.endsWith('()/'));

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'no-cycles',
      comment: 'no module imports itself through others',
      severity: 'error',
      from: { path: '^src/' },
      to: { circular: true },
    },
    {
      name: 'every-folder-has-a-tier',
      comment: `the folders of src/ are ${folders.join(', ')}; a new one needs a tier here`,
      severity: 'error',
      from: { path: '^src/[^/]+/', pathNot: `^src/(${folders.join('|')})/` },
      to: {},
    },
    {
      name: 'src-stands-alone',
      comment: 'src/ never imports tests, benchmarks or scripts',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench|scripts)/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '/native/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
  },
};
