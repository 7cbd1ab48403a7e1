// `vmsandbox` as bin/vmsandbox starts it for every command but run and finish (those start from
// the manager's bundle, cli/manager.ts); it runs those too when started directly.
import { main } from './main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
