// `vmsandbox` as bin/vmsandbox starts it for every command but run and finish (those start from
// the manager's bundle, cli/manager.ts); it runs those too when started directly.
import { exitWith } from './command.js';
import { main } from './main.js';

exitWith(main(process.argv.slice(2)));
