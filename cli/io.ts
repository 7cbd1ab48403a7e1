// Where CLI commands write. A parameter rather than process.stdout so tests can capture output
// and a dispatcher can run commands without them touching the process directly.

export interface CliIo {
  out(text: string): void;
  err(text: string): void;
}

export const processIo: CliIo = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
};
