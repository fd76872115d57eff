/** The tests' seeded generator (the one the workload model uses), so a failing fuzz case replays. */
export { prng } from './workload.js';
